"""The decoding engine: every live row of every request in one forward pass per step (continuous batching).

A *request* is one decoding run: prompts × samples × columns, with its own DecodeConfig (alpha, seed, sampling),
adapter and combination. Its streams (one continuation each) need these rows:

    base row     every stream, adapter off: p_base (and, when the adapter sits on the base's weights, the
                 residual combination's adapter_init logits of a tailored stream)
    adapter row  every tailored stream, its adapter on; composed adapters: one row per adapter ('adapter2', ...),
                 so each adapter is one more run of rows, as if another user had chosen it
    init row     a tailored stream whose adapter sits on a different model, under the residual combination

A light adapter's model is the base's first layers (ipa.models.light_model_dir): its adapter and init rows then join
the base's RowBatch and drop out after its last layer (ipa.decoding.fused), one forward pass a step for both models;
an adapter on any other model gets a RowBatch of its own, stepped after the base's.

Rows of every request that run on the same model share one `RowBatch`: one KV cache, one forward pass a step, a
LoRA adapter chosen per row (`AdapterHost.per_row`), rows kept sorted by adapter so that each adapter's rows are
one slice. Requests join between steps (their prompts are prefilled together, then their KV rows are merged into
the running batch, left-padded to a common width) and leave when done or cancelled (their rows are dropped at
once). A remote base (an OpenAI-compatible API, `RemoteBase`) serves a request's base rows instead.

    >>> engine = Engine.for_policy(policy)                                                  # doctest: +SKIP
    >>> request = Request(DecodeRun(policy, ["The movie was"], DecodeConfig(max_new_tokens=8)))  # doctest: +SKIP
    >>> engine.submit(request)                                                              # doctest: +SKIP
    >>> while not request.done: engine.step()                                               # doctest: +SKIP
    >>> request.run.result(final=True).tailored[0].text                                     # doctest: +SKIP

`generate`, `sample` and `decode_steps` at the end of this module decode one run alone through an engine of its own.
"""

from __future__ import annotations

import itertools
import threading
from collections import defaultdict
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterator

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from ipa.errors import UserError
from ipa.models import logits_at
from ipa.decoding.drafting import RemoteRounds
from ipa.decoding.fused import fused_forward
from ipa.decoding.run import DecodeConfig, DecodeResult, DecodeRun, SampleBatch, TailoredPolicy, pack_prompts

if TYPE_CHECKING:
    from ipa.policy_adapter import AdapterHost

_ids = itertools.count()
REMOTE_WAIT = 0.05
"""Seconds a step waits for a remote answer when no row has other work (then it returns, and the caller, the
scheduler, reads its inbox before the next step: a new request waits no longer than this to join)."""


# --- one model's rows --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One row of a RowBatch: which request and stream it serves, and with which adapter (None: adapter off)."""

    owner: int
    kind: str
    """'base', 'adapter' (a composed request's further adapters: 'adapter2', ...) or 'init'."""
    stream: int
    adapter: str | None
    light: bool = False
    """A row of the light model that runs inside the base's forward pass (ipa.decoding.fused)."""


def _adapter_order(row: Row) -> tuple[bool, bool, str]:
    return (row.light, row.adapter is not None, row.adapter or "")


class SlackLayer(DynamicLayer):
    """One layer's KV cache with room to grow: a step writes its token's keys and values into spare columns instead
    of copying the whole cache (DynamicLayer's torch.cat), and the room grows by half when it runs out. At 48 rows a
    cat copied every layer's whole cache at every step (11 ms of a 190 ms step on one core; bench.serve). `keys` and
    `values` read the filled part (a view); setting them (RowBatch's merge and leave) starts again with no room."""

    GROWTH = 0.5
    """Spare columns made when the room runs out, as a share of the columns filled."""

    @staticmethod
    def _filled(name: str) -> property:
        """The attribute `name` ('keys', 'values') read as its filled columns, set as a whole tensor (no room)."""
        def read(self) -> torch.Tensor | None:
            tensor = getattr(self, f"_{name}")
            return tensor if tensor is None or tensor.dim() != 4 else tensor[:, :, :getattr(self, f"_{name}_filled")]

        def write(self, value: torch.Tensor | None) -> None:
            setattr(self, f"_{name}", value)
            setattr(self, f"_{name}_filled", value.shape[-2] if value is not None and value.dim() == 4 else 0)

        return property(read, write)

    keys = _filled("keys")
    values = _filled("values")

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self._keys.dim() != 4:  # the first tokens: they are the cache (no room yet)
            self.keys, self.values = key_states, value_states
            return self.keys, self.values
        filled, new = self._keys_filled, key_states.shape[-2]
        if filled + new > self._keys.shape[-2]:
            room = filled + new + max(new, int(self.GROWTH * (filled + new)))
            self._keys = self._grown(self._keys, filled, room)
            self._values = self._grown(self._values, filled, room)
        self._keys[:, :, filled:filled + new] = key_states
        self._values[:, :, filled:filled + new] = value_states
        self._keys_filled = self._values_filled = filled + new
        return self.keys, self.values

    @staticmethod
    def _grown(tensor: torch.Tensor, filled: int, room: int) -> torch.Tensor:
        grown = tensor.new_empty((*tensor.shape[:2], room, tensor.shape[-1]))
        grown[:, :, :filled] = tensor[:, :, :filled]
        return grown


def new_cache() -> DynamicCache:
    """An empty KV cache whose layers grow in place (SlackLayer)."""
    cache = DynamicCache()
    cache.layer_class_to_replicate = SlackLayer
    return cache


class RowBatch:
    """The live rows of one model: one dynamic KV cache, one forward pass a step, rows joining and leaving.

    With `light` (a host whose model is a light cut of `host`'s, running the base's layers `layers`), the light
    model's rows join this batch too, after the base's, and skip the layers it lacks (ipa.decoding.fused): each
    layer's KV cache then holds all rows, or the base's only."""

    def __init__(self, host: AdapterHost, light: AdapterHost | None = None, layers: list[int] | None = None):
        self.host = host
        self.light, self.light_layers = light, set(layers or ())
        self.rows: list[Row] = []
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None
        """(R, L) 1 for a real position, 0 for left padding."""
        self.next_position: torch.Tensor | None = None
        """(R,) the position id of each row's next token."""
        self.index: dict[tuple[int, str], torch.Tensor] = {}
        """(owner, kind) -> positions of those rows in the batch, in the order they joined."""

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def device(self) -> torch.device:
        return self.host.base_model.device

    def _forward(self, rows: list[Row], **inputs) -> torch.Tensor:
        """Next-token logits (R, V) of one forward pass over the rows, each with its adapter."""
        model, names = self.host.base_model, [row.adapter for row in rows]
        if self.light is not None:
            n_full = sum(not row.light for row in rows)
            hidden = fused_forward(self.host, self.light, sorted(self.light_layers), n_full, names,
                                   inputs.pop("past_key_values"), **inputs)
            return logits_at(model, hidden, slice(-1, None))[:, 0].float()
        with self.host.per_row(names):
            hidden = model.get_decoder()(**inputs, use_cache=True).last_hidden_state
            return logits_at(model, hidden, slice(-1, None))[:, 0].float()

    def _every_row(self, layer: int) -> bool:
        """Whether layer `layer`'s KV cache holds every row (else the base's rows only, the first ones)."""
        return self.light is None or layer in self.light_layers

    def step(self, tokens: torch.Tensor, hold: torch.Tensor | None = None) -> torch.Tensor:
        """Feed each row its next token (R,); returns next-token logits (R, V).

        hold (R,) marks rows that wait (a request whose remote answer is not in): each is fed its token (a pad) with
        attention mask 0 and its position unchanged, so that its KV cache and positions stay as they were; its
        logits are not meaningful."""
        live = torch.ones(len(self), dtype=torch.long) if hold is None else (~hold).long()
        live = live.to(self.mask.device)
        self.mask = torch.cat([self.mask, live[:, None]], dim=1)
        positions = self.next_position.unsqueeze(1)
        self.next_position = self.next_position + live.to(self.next_position.device)
        return self._forward(self.rows, input_ids=tokens.unsqueeze(1).to(self.device),
                             attention_mask=self.mask, position_ids=positions, past_key_values=self.cache)

    def rewind(self, positions: torch.Tensor, counts: torch.Tensor) -> None:
        """Forget the last counts[i] tokens fed to row positions[i] (drafted tokens a remote base rejected): their
        KV entries are masked out for good and the row's next position moves back over them."""
        for row, count in zip(positions.tolist(), counts.tolist()):
            if count <= 0:
                continue
            fed = self.mask[row].nonzero().flatten()
            self.mask[row, fed[-count:]] = 0
            self.next_position[row] -= count

    def join(self, rows: list[Row], prompts: list[list[int]], prefixes: list[torch.Tensor | None], pad_id: int) -> torch.Tensor:
        """Prefill new rows and merge them into the batch; returns their next-token logits (k, V) in the order given.

        A row's prefix (a Quark reward token's embedding) goes before its prompt.
        """
        order = sorted(range(len(rows)), key=lambda i: _adapter_order(rows[i]))
        rows, prompts, prefixes = [rows[i] for i in order], [prompts[i] for i in order], [prefixes[i] for i in order]
        inputs, mask, positions = pack_prompts(self.host, prompts, prefixes, pad_id, self.device)
        cache = new_cache()
        inputs.update(attention_mask=mask, position_ids=positions, past_key_values=cache)
        logits = self._forward(rows, **inputs)
        self._merge(rows, cache, mask, positions[:, -1] + 1)
        unsort = torch.empty(len(order), dtype=torch.long)
        unsort[torch.tensor(order)] = torch.arange(len(order))
        return logits[unsort.to(logits.device)]

    def _merge(self, rows: list[Row], cache: DynamicCache, mask: torch.Tensor, next_position: torch.Tensor) -> None:
        if not self.rows:
            self.rows, self.cache, self.mask, self.next_position = rows, cache, mask, next_position
            self._reindex()
            return
        width = max(self.mask.shape[1], mask.shape[1])
        old_pad, new_pad = width - self.mask.shape[1], width - mask.shape[1]
        all_rows = self.rows + rows
        # Keep rows sorted by adapter (stable: a request's rows of one kind stay in order), so each adapter is one slice;
        # light rows last.
        order = sorted(range(len(all_rows)), key=lambda i: _adapter_order(all_rows[i]))
        perm = torch.tensor(order, device=self.device)
        # A layer that holds the base's rows only: old and new rows of the base are each a prefix of their batch.
        old_full = sum(not row.light for row in self.rows)
        perm_full = torch.tensor([i if i < len(self.rows) else old_full + i - len(self.rows)
                                  for i in order if not all_rows[i].light], dtype=torch.long, device=self.device)
        for i, (old_layer, new_layer) in enumerate(zip(self.cache.layers, cache.layers, strict=True)):
            p = perm if self._every_row(i) else perm_full
            old_layer.keys = torch.cat([_pad_left(old_layer.keys, old_pad), _pad_left(new_layer.keys, new_pad)])[p]
            old_layer.values = torch.cat([_pad_left(old_layer.values, old_pad), _pad_left(new_layer.values, new_pad)])[p]
        self.mask = torch.cat([_pad_left(self.mask, old_pad, dim=1), _pad_left(mask, new_pad, dim=1)])[perm]
        self.next_position = torch.cat([self.next_position, next_position])[perm]
        self.rows = [all_rows[i] for i in order]
        self._reindex()

    def leave(self, owner: int) -> None:
        """Drop every row of a request (done or cancelled)."""
        keep = [i for i, row in enumerate(self.rows) if row.owner != owner]
        if len(keep) == len(self.rows):
            return
        if not keep:
            self.rows, self.cache, self.mask, self.next_position, self.index = [], None, None, None, {}
            return
        kept = torch.tensor(keep, device=self.device)
        # the base's rows are the first ones: their positions are also their places in a layer that holds them only
        kept_full = torch.tensor([i for i in keep if not self.rows[i].light], dtype=torch.long, device=self.device)
        mask = self.mask[kept]
        start = int((mask.sum(0) > 0).nonzero()[0])  # columns that are padding in every remaining row go
        for i, layer in enumerate(self.cache.layers):
            k = kept if self._every_row(i) else kept_full
            layer.keys, layer.values = layer.keys[k, :, start:], layer.values[k, :, start:]
        self.mask = mask[:, start:]
        self.next_position = self.next_position[kept]
        self.rows = [self.rows[i] for i in keep]
        self._reindex()

    def _reindex(self) -> None:
        index = defaultdict(list)
        for position, row in enumerate(self.rows):
            index[(row.owner, row.kind)].append(position)
        self.index = {key: torch.tensor(value, device=self.device) for key, value in index.items()}


def _pad_left(tensor: torch.Tensor, amount: int, dim: int = 2) -> torch.Tensor:
    """Zeros before `tensor` along `dim` (KV caches: (R, H, L, D), dim 2; masks: (R, L), dim 1)."""
    if amount == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = amount
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


# --- requests --------------------------------------------------------------------------------------------------


class Request:
    """One decoding run in the engine: its streams, their rows, and the sampling state (see DecodeRun)."""

    def __init__(self, run: DecodeRun, background: bool = False):
        self.id = next(_ids)
        self.run = run
        self.background = background
        """Work nobody watches token by token (a class's vote pairs): admitted after the interactive requests, and
        held to Engine.background_rows rows in all."""
        self.cancelled = False
        self.error: Exception | None = None
        """What failed this request alone (its remote base's ApiBaseError); the engine drops it at once."""
        remote = run.policy.remote_base
        self.remote = RemoteRounds(run, remote) if remote is not None else None
        """The request's rounds on a remote base (ipa.decoding.drafting), when the base is remote."""
        self.snapshot = None
        """What its user sees next (set by app.scheduler): requests ahead while waiting, then a DecodeResult."""
        self.updated = threading.Event()
        """Set whenever the snapshot changes, or the run advances."""
        self.lock = threading.Lock()
        """Held while the run changes (a step, a restored state), so that its user reads it whole (DecodeRun.result)."""

    @property
    def done(self) -> bool:
        return self.run.done or self.cancelled or self.error is not None

    def cancel(self) -> None:
        """Stop decoding; the engine drops the rows at its next step."""
        self.cancelled = True

    @property
    def kinds(self) -> list[tuple[str, str, list[int], str | None]]:
        """(model, kind, streams, adapter) of each kind of row the request needs; model is 'base' or 'adapter'."""
        if self.remote is not None:
            return self.remote.row_kinds
        run = self.run
        out = [("base", "base", list(range(run.n_streams)), None)]
        if run.use_adapter:
            out += [("adapter", kind, list(run.steered), name) for kind, name, _ in run.terms]
            if run.needs_init_rows:
                out.append(("adapter", "init", list(run.steered), None))
        return out

    @property
    def n_rows(self) -> int:
        """How many rows the request needs."""
        return sum(len(streams) for _, _, streams, _ in self.kinds)

    def rows(self) -> list[tuple[str, Row, list[int], torch.Tensor | None]]:
        """(model, row, prompt ids, prefix) for every row the request needs."""
        run, adapter = self.run, self.run.policy.adapter
        return [(model, Row(self.id, kind, s, name), run.stream_prompts[s],
                 adapter.reward_token_embedding(name) if name is not None else None)
                for model, kind, streams, name in self.kinds for s in streams]

    @property
    def held(self) -> bool:
        """Its rows wait for its remote base's answer (fed masked pads meanwhile)."""
        return self.remote is not None and self.remote.held


class Engine:
    """Decodes every submitted request together, one step at a time; requests join and leave between steps.

    `base` is the model of every request's base rows (or the host lending tokenizer and EOS ids to a remote base);
    `adapter` the model the adapters sit on (the base itself by default). Every request must use these hosts.
    `max_rows` bounds the rows per forward pass (0: no bound); requests that do not fit wait, in order.
    `background_rows` bounds the rows of background requests (Request.background) in a step (0: no bound): on a CPU
    a step's time grows with its rows, and a request that joins cannot wait for the rows already running to leave,
    so a class's vote pairs filling the batch would set the pace of the next Generate (bench.classroom, 2 cores:
    p95 of a Generate over one alone 4.9 x with the bound applied only while a Generate ran, 2.6 x with 12 rows
    always, 4.0 x with 24; the votes then take 2 x as long when the class votes without reading).
    """

    def __init__(self, base: AdapterHost, adapter: AdapterHost | None = None, max_rows: int = 0,
                 background_rows: int = 0):
        self.base = base
        self.adapter = adapter if adapter is not None else base
        layers = None if self.adapter is base else self.adapter.light_layers(base)
        if self.adapter is base or layers is not None:  # one forward pass a step for both models' rows
            self.batches = {"base": RowBatch(base, self.adapter if layers else None, layers)}
            self.batches["adapter"] = self.batches["base"]
        else:
            self.batches = {"base": RowBatch(base), "adapter": RowBatch(self.adapter)}
        self.max_rows = max_rows
        self.background_rows = background_rows
        self.waiting: list[Request] = []
        self.running: list[Request] = []
        self.failed: list[Request] = []
        """Requests that failed alone (request.error) since the caller last emptied this list."""

    @classmethod
    def for_policy(cls, policy: TailoredPolicy, max_rows: int = 0) -> "Engine":
        return cls(policy.base, policy.adapter, max_rows)

    @property
    def rows(self) -> int:
        return sum(len(b) for b in {id(b): b for b in self.batches.values()}.values())

    def submit(self, request: Request) -> None:
        policy = request.run.policy
        if policy.base is not self.base or (policy.adapter is not None and policy.adapter is not self.adapter):
            raise ValueError("This engine serves other models than the request's policy.")
        if request.background:
            self.waiting.append(request)
        else:  # ahead of every background request, behind the interactive ones
            self.waiting.insert(sum(not r.background for r in self.waiting), request)

    def position(self, request: Request) -> int:
        """How many requests wait ahead of this one (0: it runs next or already runs)."""
        return self.waiting.index(request) if request in self.waiting else 0

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.running

    @property
    def pad_id(self) -> int:
        """The id that pads prompts on the left: the tokenizer's pad token, else its end-of-sequence token (a
        tokenizer read from a GGUF may have neither set; ipa.models sets one), else 0 (masked out anyway)."""
        tokenizer = self.base.tokenizer
        for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
            if candidate is not None:
                return int(candidate)
        return 0

    @torch.inference_mode()
    def step(self) -> list[Request]:
        """One decoding step of every running request, after admitting those that fit; returns the requests that
        advanced. Four phases:

        1. retire:   finished and cancelled requests leave (their rows are dropped);
        2. decode:   one forward pass per model over the running rows, each fed its last token (a remote base's
                     rows ask its server);
        3. join:     waiting requests that fit are prefilled together and merged into the running batch;
        4. advance:  each request picks its streams' next tokens from its rows' logits (DecodeRun.advance); a request
                     on a remote base takes the tokens its server's answers verified, when they are in
                     (ipa.decoding.drafting), and sends its next request.

        A request on a remote base never holds up the step: its requests run on a thread pool, and while an answer is
        out its rows wait (RowBatch.step's hold). Only when every running request waits for an answer (and none can
        join) does the step wait, for the first answer or REMOTE_WAIT seconds.
        """
        self._retire()
        self._wait_for_remote()
        logits = self._decode_running()
        joining = self.admit()
        self._join(joining, logits)
        self.running += joining
        advanced = self._advance(logits)
        self._retire()
        return advanced

    def _retire(self) -> None:
        self._drop([r for r in self.running if r.done])
        self.waiting = [r for r in self.waiting if not r.cancelled]

    def _wait_for_remote(self) -> None:
        """Block (REMOTE_WAIT seconds at most) only when no row has work: every running request waits for its
        remote answer and no waiting request fits."""
        if any(not r.held and (r.remote is None or r.remote.row_kinds) for r in self.running):
            return
        if self.waiting and (not self.max_rows or not self.rows or self.rows + self.waiting[0].n_rows <= self.max_rows):
            return
        pending = [f for r in self.running if r.remote is not None for f in r.remote.pending()]
        if pending:
            wait(pending, timeout=REMOTE_WAIT, return_when=FIRST_COMPLETED)

    def _decode_running(self) -> dict[int, dict[str, torch.Tensor]]:
        """Phase 2: request id -> row kind -> next-token logits (rows, V) of the rows already running (held rows:
        none; a batch whose rows all wait takes no step)."""
        logits = defaultdict(dict)
        for _, batch in self._distinct_batches():
            if not batch.rows:
                continue
            tokens = torch.full((len(batch),), self.pad_id, dtype=torch.long)
            hold = torch.zeros(len(batch), dtype=torch.bool)
            for request in self.running:
                for _, kind, streams, _ in request.kinds:
                    positions = batch.index.get((request.id, kind))
                    if positions is None:
                        continue
                    if request.held:
                        hold[positions.cpu()] = True
                    elif request.remote is not None:
                        tokens[positions.cpu()] = request.remote.feed(kind)
                    else:
                        tokens[positions.cpu()] = request.run.next_tokens[streams].cpu()
            if bool(hold.all()):
                continue
            out = batch.step(tokens, hold if bool(hold.any()) else None)
            for request in self.running:
                if request.held:
                    continue
                for _, kind, _, _ in request.kinds:
                    positions = batch.index.get((request.id, kind))
                    if positions is not None:
                        logits[request.id][kind] = out[positions]
        return logits

    def _join(self, joining: list[Request], logits: dict) -> None:
        """Phase 3: prefill the joining requests' rows together, model by model, and merge them into the batch."""
        if not joining:
            return
        for _, batch in self._distinct_batches():
            needs = [(request, row, prompt, prefix, m) for request in joining
                     for (m, row, prompt, prefix) in request.rows() if self.batches[m] is batch]
            if not needs:
                continue
            rows = [replace(row, light=True) if m == "adapter" and batch.light is not None else row
                    for _, row, _, _, m in needs]
            out = batch.join(rows, [n[2] for n in needs], [n[3] for n in needs], self.pad_id)
            for request in joining:
                for _, kind, _, _ in request.kinds:
                    picks = [i for i, n in enumerate(needs) if n[0] is request and n[1].kind == kind]
                    if picks:
                        logits[request.id][kind] = out[torch.tensor(picks, device=out.device)]
        for request in joining:
            if request.remote is not None and request.remote.row_kinds:  # the prefill is its first local step
                request.remote.local_step(logits.pop(request.id))

    def _advance(self, logits: dict) -> list[Request]:
        """Phase 4: every request with logits this step picks its next tokens, a request on a remote base those its
        answers verified (under its lock: its user may be reading it). A remote request's error fails it alone."""
        advanced = []
        for request in self.running:
            if request.remote is None:
                if request.id in logits:
                    with request.lock:
                        request.run.advance(logits[request.id])
                    advanced.append(request)
                continue
            if request.id in logits:
                request.remote.local_step(logits[request.id])
            try:
                commits, rewind = request.remote.poll()
            except UserError as err:
                request.error = err
                self.failed.append(request)
                continue
            if rewind is not None:
                self._rewind(request, rewind)
            if commits:
                with request.lock:
                    for step_logits, forced, mass in commits:
                        request.run.advance(step_logits, forced, mass)
                advanced.append(request)
        return advanced

    def _rewind(self, request: Request, counts: torch.Tensor) -> None:
        """Mask the KV entries of each stream's rejected drafts in every row of that stream."""
        if not bool((counts > 0).any()):
            return
        for model, kind, streams, _ in request.kinds:
            positions = self.batches[model].index.get((request.id, kind))
            if positions is not None:
                self.batches[model].rewind(positions.cpu(), counts[streams])

    def _distinct_batches(self):
        seen = set()
        for model, batch in self.batches.items():
            if id(batch) not in seen:
                seen.add(id(batch))
                yield model, batch

    def admit(self) -> list[Request]:
        """Take the waiting requests that fit beside the running rows (max_rows): interactive ones first come first
        served, then background ones in order, within background_rows.
        The caller decodes them (step() prefills them into the running batch; a ZeroGPU call decodes them in its own
        process)."""
        joining, rows = [], self.rows
        background = sum(r.n_rows for r in self.running if r.background)
        for request in self.waiting:
            if self.max_rows and rows + request.n_rows > self.max_rows and (rows or joining):
                break  # nothing overtakes the request at the head of its queue
            held = request.background and self.background_rows
            if held and background and background + request.n_rows > self.background_rows:
                break  # (one background request always may run: that work waits, it never starves)
            joining.append(request)
            rows += request.n_rows
            background += request.n_rows if request.background else 0
        self.waiting = [r for r in self.waiting if r not in joining]
        return joining

    def cancel(self, request: Request) -> None:
        """Stop a request now, from the thread that steps the engine: it leaves the queue, or its rows leave the batch."""
        request.cancel()
        if request in self.waiting:
            self.waiting.remove(request)
        self._drop([request])

    def _drop(self, requests: list[Request]) -> None:
        for request in requests:
            for _, batch in self._distinct_batches():
                batch.leave(request.id)
            if request in self.running:
                self.running.remove(request)


# --- one run alone -----------------------------------------------------------------------------------------------


@torch.inference_mode()
def decode_steps(
    policy: TailoredPolicy,
    prompts: list[str] | list[list[int]],
    config: DecodeConfig | None = None,
    n: int = 1,
    columns: tuple[str, ...] = ("base", "tailored"),
    inspect: bool = False,
) -> Iterator[DecodeRun]:
    """The decoding loop of one run alone, through an engine of its own. Yields the run after every generated token.

    prompts: strings (tokenised without special tokens) or lists of token ids.
    columns: which policies to decode: ('base',), ('tailored',) or both, side by side.
    inspect: record the token inspector's data (Completion.steps).
    """
    yield from run_steps(DecodeRun(policy, prompts, config, n, columns, inspect=inspect))


@torch.inference_mode()
def run_steps(run: DecodeRun) -> Iterator[DecodeRun]:
    """decode_steps for a run already made (with its own random numbers, for instance)."""
    engine = Engine.for_policy(run.policy)
    request = Request(run)
    engine.submit(request)
    while not run.done:
        advanced = engine.step()
        if request.error is not None:
            raise request.error
        if advanced:
            yield run


def generate(
    policy: TailoredPolicy,
    prompts: list[str],
    config: DecodeConfig | None = None,
    n: int = 1,
    columns: tuple[str, ...] = ("base", "tailored"),
    inspect: bool = False,
) -> DecodeResult:
    """Decode to the end and return every continuation (side by side by default); inspect=True fills each
    Completion's `steps` for the token inspector (ipa.decoding.inspector), the base column's replayed with the
    adapters beside it (DecodeRun.base_replay), so that both columns' steps are whole."""
    run = None
    for run in decode_steps(policy, prompts, config, n, columns, inspect):
        pass
    result = run.result(final=True)
    if any(getattr(c.steps, "partial", False) for c in result.base):
        replay = run.base_replay()
        for replay in run_steps(replay):
            pass
        for completion, replayed in zip(result.base, replay.result(final=True).base, strict=True):
            completion.steps = replayed.steps
    return result


def sample(
    policy: TailoredPolicy,
    prompts: list[str] | list[list[int]],
    config: DecodeConfig | None = None,
    n: int = 1,
    columns: tuple[str, ...] = ("tailored",),
    stop: threading.Event | None = None,
) -> SampleBatch | None:
    """Decode to the end and return token tensors (for training); None if `stop` was set meanwhile (checked
    every token, so that a training run stops within a decoding step)."""
    run = None
    for run in decode_steps(policy, prompts, config, n, columns):
        if stop is not None and stop.is_set():
            return None
    return run.batch()
