"""A new Gradio session's set-up, made cheap: the two places where the page changes how Gradio builds a session.

Every new session (a browser opening the page, an API client's first call) gets a `gradio.state_holder.SessionState`,
made on the server's event loop, one session after another, before its first request reaches a handler. Gradio
6.31 builds there the config of every block of the page (1,065 on this page: 20 ms a session on a quiet 2-core
Xeon, 120 ms with the decoding thread and 16 clients on the same cores; 16 API users arriving at once waited about
1 s before the first of their requests was handled, BENCHMARKS.md, Serving). A session reads those configs only
for a deep link (`SessionState.components`) or for a block whose value it changes. So:

- `lazy_session_configs` makes a session build a block's config the first time it is read (`LazyConfigs`);
- `cache_block_signatures` makes building a config cheaper where it is built (the page's /config, a deep link):
  most of it went into inspect.signature of each block's class __init__ and inspect.getfile of its class, the
  same answers for every block of a class (47 -> 21 ms for all 1,065 blocks).

Both give the very configs Gradio builds without them (tests/test_page_sessions.py compares them). `install()`
does both, once; app.ui.build_ui calls it.
"""

from __future__ import annotations

from collections.abc import Iterator


def install() -> None:
    """Both changes, once per process (a second call changes nothing)."""
    cache_block_signatures()
    lazy_session_configs()


# --- a session's block configs, built when read ------------------------------------------------------------------


class LazyConfigs(dict):
    """A session's config_values: block id -> config dict, each built on first read from the block it had when the
    session began. Reads, membership, iteration and assignment behave as on the dict Gradio builds eagerly."""

    def __init__(self, blocks_config, ids: list[int]):
        super().__init__()
        self._blocks_config = blocks_config
        self._pending = {i: blocks_config.blocks[i] for i in ids}
        """Blocks whose config is not built yet (the block objects of the session's start)."""
        self._order: list[int] | None = list(ids)
        """Gradio's order of the configs (the page's blocks, then any added), until it is restored (_build_all)."""

    def _build(self, key) -> None:
        block = self._pending.pop(key)
        dict.__setitem__(self, key, self._blocks_config.config_for_block(key, [], block))

    def _build_all(self) -> None:
        """Build every config, in Gradio's order: the page's blocks in their order, then those added since."""
        for key in list(self._pending):
            self._build(key)
        if self._order is not None:
            built = {key: dict.__getitem__(self, key) for key in self._order if dict.__contains__(self, key)}
            added = {key: value for key, value in dict.items(self) if key not in built}
            dict.clear(self)
            dict.update(self, {**built, **added})
            self._order = None

    def __getitem__(self, key):
        if key in self._pending:
            self._build(key)
        return dict.__getitem__(self, key)

    def get(self, key, default=None):
        return self[key] if key in self else default

    def __contains__(self, key) -> bool:
        return key in self._pending or dict.__contains__(self, key)

    def __setitem__(self, key, value) -> None:
        self._pending.pop(key, None)
        dict.__setitem__(self, key, value)

    def __delitem__(self, key) -> None:
        if self._pending.pop(key, None) is None:
            dict.__delitem__(self, key)

    def __len__(self) -> int:
        return dict.__len__(self) + len(self._pending)

    def __iter__(self) -> Iterator:
        self._build_all()
        return dict.__iter__(self)

    def __eq__(self, other) -> bool:
        self._build_all()
        return dict.__eq__(self, other)

    __hash__ = None

    def keys(self):
        self._build_all()
        return dict.keys(self)

    def values(self):
        self._build_all()
        return dict.values(self)

    def items(self):
        self._build_all()
        return dict.items(self)


class _NoBlocks:
    """What SessionState.__init__ reads of the Blocks, with no block to build a config for (LazyConfigs does it)."""

    def __init__(self, blocks):
        self.default_config = blocks.default_config
        self.blocks = {}


def lazy_session_configs() -> None:
    """Make each new SessionState build its blocks' configs when read (LazyConfigs), not all at its start."""
    from gradio.state_holder import SessionState

    if getattr(SessionState.__init__, "_lazy_configs", False):
        return
    eager_init = SessionState.__init__

    def __init__(self, blocks) -> None:
        eager_init(self, _NoBlocks(blocks))  # everything else as Gradio does it
        self.config_values = LazyConfigs(self.blocks_config, [k for k in self.blocks_config.blocks if k in blocks.blocks])

    __init__._lazy_configs = True
    __init__._eager = eager_init
    SessionState.__init__ = __init__


# --- block classes' signatures, asked once ---------------------------------------------------------------------------


def cache_block_signatures() -> None:
    """Cache inspect.signature of block classes' __init__ and inspect.getfile of block classes, as gradio.blocks asks
    them while building a block's config (anything else is asked afresh)."""
    import gradio.blocks

    if isinstance(gradio.blocks.inspect, _CachedInspect):
        return
    gradio.blocks.inspect = _CachedInspect(gradio.blocks.inspect)


class _CachedInspect:
    """The `inspect` module as gradio.blocks sees it, with class-level answers cached (cache_block_signatures)."""

    def __init__(self, module):
        self._module = module
        self._signatures, self._files = {}, {}

    def __getattr__(self, name: str):
        return getattr(self._module, name)

    def signature(self, obj, *args, **kwargs):
        if args or kwargs or getattr(obj, "__name__", None) != "__init__":
            return self._module.signature(obj, *args, **kwargs)
        if obj not in self._signatures:
            self._signatures[obj] = self._module.signature(obj)
        return self._signatures[obj]

    def getfile(self, obj):
        if not isinstance(obj, type):
            return self._module.getfile(obj)
        if obj not in self._files:
            self._files[obj] = self._module.getfile(obj)  # an OSError (a class without a file) is raised each time
        return self._files[obj]
