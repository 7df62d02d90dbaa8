"""Online template parsing with Drain3, keyed by a hash of the template text, with our own JSON snapshots.

Why a hash of the text and not Drain's cluster id: a cluster id is local to one miner (another worker numbers
its clusters differently), and Drain generalises a cluster's template as lines arrive (`a b c` -> `a <*> c`).
Keyed by text, a generalised template is a new key, so it is classified again, and every worker agrees on keys.

Why our own snapshot instead of `TemplateMiner.save_state`: that one pickles the Drain object with jsonpickle,
whose pinned version (drain3 0.9.11 requires jsonpickle==1.5.1) clashes with verl's environment, and a pickle
ties the state to drain3's class layout. Ours is plain JSON of the clusters and the prefix tree (README: the
drain3 resolution).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rationanomaly.parsing import HEADERS

logger = logging.getLogger(__name__)

SNAPSHOT_VERSION = 1
KEY_CHARS = 16  # ours: 64 bits of sha1; a collision among even a million templates has odds below 1e-7
# Drain defaults as in drain3 0.9.11 (depth 4, similarity 0.4, 100 children per node)
DEFAULT_DEPTH, DEFAULT_SIM_TH, DEFAULT_MAX_CHILDREN = 4, 0.4, 100
LOG_FORMATS = ("raw", "bgl")
# loghub BGL's header (Label ... Level), from the one table rationanomaly.parsing splits raw logs with. Not its
# parse_line: that gives an empty Content for a line without the full header (kept whole here) and strips spaces
BGL_HEADER_FIELDS = len(HEADERS["bgl"])


class StreamDependencyError(RuntimeError):
    """An optional package of the stream service is missing (the message says how to install it)."""


@dataclass(frozen=True)
class ParsedLine:
    """A line's template, its key, and whether this line created or changed a template."""

    template: str
    key: str
    change: str  # drain3's change_type: "cluster_created", "cluster_template_changed" or "none"


def template_key(template: str) -> str:
    """The cache key of a template: the first KEY_CHARS hex digits of its sha1."""
    return hashlib.sha1(template.encode("utf-8")).hexdigest()[:KEY_CHARS]


def log_content(line: str, log_format: str = "raw") -> str:
    """The message part of a raw log line: the whole line (`raw`) or what follows loghub's BGL header (`bgl`)."""
    if log_format == "raw":
        return line
    if log_format != "bgl":
        raise ValueError(f"unknown log format {log_format!r}; use one of {', '.join(LOG_FORMATS)}")
    parts = line.split(None, BGL_HEADER_FIELDS)
    return parts[BGL_HEADER_FIELDS] if len(parts) > BGL_HEADER_FIELDS else line


def import_drain3() -> Any:
    """The drain3 package, or a clear error saying how this project installs it."""
    try:
        import drain3
        import drain3.drain
        import drain3.template_miner_config
    except ImportError as error:
        raise StreamDependencyError(
            f"drain3 is not importable ({error}); run `make install-stream` (it installs drain3==0.9.11 without "
            "its outdated pins, see README 'Real-time detection service')"
        ) from error
    return drain3


class TemplateParser:
    """A Drain3 miner (no masking, no persistence handler) that hands out template keys and JSON snapshots."""

    def __init__(
        self,
        depth: int = DEFAULT_DEPTH,
        sim_th: float = DEFAULT_SIM_TH,
        max_children: int = DEFAULT_MAX_CHILDREN,
        max_clusters: int | None = None,
        log_format: str = "raw",
    ):
        drain3 = import_drain3()
        log_content("", log_format)  # reject an unknown format now, not on the first line
        config = drain3.template_miner_config.TemplateMinerConfig()
        config.drain_depth, config.drain_sim_th = depth, sim_th
        config.drain_max_children, config.drain_max_clusters = max_children, max_clusters
        config.profiling_enabled = False
        self.settings = {
            "depth": depth,
            "sim_th": sim_th,
            "max_children": max_children,
            "max_clusters": max_clusters,
            "log_format": log_format,
        }
        self.log_format = log_format
        self.miner = drain3.TemplateMiner(config=config)
        self._drain_module = drain3.drain
        self.changes = 0
        self._keys: dict[str, str] = {}

    def parse(self, line: str) -> ParsedLine:
        """Add one line to the miner and return its (possibly just generalised) template and key."""
        result = self.miner.add_log_message(log_content(line, self.log_format))
        template = result["template_mined"]
        if result["change_type"] != "none":
            self.changes += 1
        key = self._keys.get(template)
        if key is None:  # hashing once per template, not per line: a few microseconds at 15k lines/s
            key = self._keys[template] = template_key(template)
        return ParsedLine(template, key, result["change_type"])

    def match(self, line: str) -> str | None:
        """The template a line matches now, without learning from it (None when no cluster fits)."""
        cluster = self.miner.match(log_content(line, self.log_format))
        return None if cluster is None else cluster.get_template()

    @property
    def cluster_count(self) -> int:
        """Number of templates the miner holds."""
        return len(self.miner.drain.id_to_cluster)

    def snapshot(self) -> dict:
        """The miner's state as JSON-ready data: settings, clusters, prefix tree, id counter.

        With `max_clusters` set, the clusters come back in insertion order, not in drain3's LRU order.
        """
        drain = self.miner.drain
        clusters = [[c.cluster_id, list(c.log_template_tokens), c.size] for c in drain.id_to_cluster.values()]
        return {
            "version": SNAPSHOT_VERSION,
            "settings": self.settings,
            "clusters": clusters,
            "counter": drain.clusters_counter,
            "tree": _tree_to_json(drain.root_node),
        }

    @classmethod
    def restore(cls, snapshot: Mapping[str, Any]) -> TemplateParser:
        """A parser in exactly the state `snapshot` recorded (it continues as the original would)."""
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(
                f"Drain snapshot version {snapshot.get('version')!r} is not {SNAPSHOT_VERSION}; "
                "delete the snapshot (the parser then learns templates again)"
            )
        parser = cls(**snapshot["settings"])
        drain, module = parser.miner.drain, parser._drain_module
        for cluster_id, tokens, size in snapshot["clusters"]:
            cluster = module.LogCluster(tokens, int(cluster_id))
            cluster.size = int(size)
            drain.id_to_cluster[int(cluster_id)] = cluster
        drain.clusters_counter = int(snapshot["counter"])
        drain.root_node = _tree_from_json(snapshot["tree"], module.Node)
        return parser


def _tree_to_json(node: Any) -> dict:
    """A prefix-tree node as {"c": cluster ids, "k": {token: child}} (depth is Drain's, at most a few levels)."""
    return {"c": list(node.cluster_ids), "k": {k: _tree_to_json(v) for k, v in node.key_to_child_node.items()}}


def _tree_from_json(data: Mapping[str, Any], node_class: type) -> Any:
    """The inverse of `_tree_to_json`."""
    node = node_class()
    node.cluster_ids = [int(i) for i in data["c"]]
    node.key_to_child_node = {k: _tree_from_json(v, node_class) for k, v in data["k"].items()}
    return node
