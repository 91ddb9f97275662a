"""A request on a remote base, round by round: draft locally, verify with one request (speculative sampling).

A black-box base answers requests, not forward passes, and a request costs a round trip (tens to hundreds of ms
over a network) whatever it asks. So the playground drafts: its local tailored policy (the adapter on a local
stand-in for the base, the model that lends the tokenizer: the embedded model, or an approximate base of the same
family) proposes up to k tokens a stream, and one request asks the server for the base's top-k log-probabilities
at every drafted position and the one after (`prompt_logprobs`, or `echo`: ipa.decoding.remote). The tailored
distribution p at each position is then computed from the server's numbers and the local adapter's logits there,
exactly as one-request-per-token decoding computes it, and the drafts are kept or replaced by the speculative-sampling
rule (policy_math.verify_drafts): every token is distributed as p, whatever the draft policy q was; q only decides
how many tokens a request buys. With k = 0 (a server that cannot score a prompt) a round is one request for one
token: the old per-token decoding, run the same way.

A round of a request (every stream at once, each from its own verified length):

    local step 0      its rows are fed the last verified token  -> logits at position f (f: the stream's frontier)
    local step j      fed draft j-1                              -> logits at f + j; draft j drawn from q there
    (drafts done)     one request a stream: context + drafts     (runs on ApiBase's thread pool)
    local step m      fed the last draft                         -> logits at f + m, for the token after the drafts
    (answer in)       verify: keep drafts while the rule says so, then one token from p (the residual's or, all
                      kept, the next position's); the rows' KV entries of rejected drafts are masked (rewind)

While its answer is out, the request's rows are *held*: the engine feeds them a masked pad that leaves their KV
cache and positions as they were (engine.RowBatch.step), so its step serves every other request meanwhile and a slow
server delays only its own users. Streams verify different numbers of tokens; the run (DecodeRun) takes them a step
at a time once every live stream has one (`advance(forced=...)`, which records the server's numbers).

Random numbers: a draft at step t uses the run's uniform of step t (DecodeRun.step_uniforms, as token-by-token
decoding would), the rule's accept and redraw uniforms come from the run's second generator; the base and tailored
columns of a pair share all of them, so at alpha = 0 the two columns stay identical. Greedy decoding keeps a draft
while it is p's argmax: the same tokens as one request per token.
"""

from __future__ import annotations

import math
from collections import deque
from concurrent.futures import Future

import torch

from ipa.decoding.policy_math import sample_coupled, sampling_logits, topk_union, verify_drafts
from ipa.decoding.run import DecodeError, DecodeRun, RemoteBase


class RemoteRounds:
    """One request's rounds on a remote base (see the module's docstring); the engine drives it in its phases.

    row_kinds: (model, kind, streams, adapter) of each kind of local row the request needs:
        'standin'   every stream on the local base model, adapter off: the draft's base (only when drafting)
        'adapter'…  the steered streams with each adapter on, as for a local base
        'init'      the steered streams' adapter-initial model (residual combination), unless the stand-in is it
    """

    def __init__(self, run: DecodeRun, remote: RemoteBase):
        self.run, self.remote = run, remote
        policy, S = run.policy, run.n_streams
        self.served = [(kind, remote.served_model(name)) for kind, name, _ in run.terms] if run.use_adapter else []
        """(row kind, served model) of each adapter the server serves beside the base (a LoRA); all or none."""
        if any(model is None for _, model in self.served):
            if any(model is not None for _, model in self.served):
                raise DecodeError("Serve every composed adapter beside the base (--base-api-adapters), or none of them: "
                                  f"{', '.join(name for _, name, _ in run.terms)}.")
            self.served = []
        self.k = 0 if self.served else remote.draft_tokens
        kinds = [("base", "standin", list(range(S)), None)] if self.k else []
        if run.use_adapter and not self.served:
            kinds += [("adapter", kind, list(run.steered), name) for kind, name, _ in run.terms]
            if run.needs_init_rows and not (self.k and policy.adapter is policy.base):
                kinds.append(("adapter", "init", list(run.steered), None))
        self.row_kinds = kinds
        self.context = [list(p) for p in run.stream_prompts]
        """Each stream's prompt and verified tokens: what the server is sent."""
        self.frontier = [0] * S
        """Tokens verified per stream."""
        self.ended = [False] * S
        self.verified: list[deque] = [deque() for _ in range(S)]
        """Per stream, verified tokens not yet taken by the run: (token, {kind: (V,) row}, base mass)."""
        self.eos = set(run.eos) if run.config.stop_at_eos else set()
        self.max_new = run.config.max_new_tokens
        self.pad_id = run.pad_id
        self._begin_round()

    # --- the round's local steps ------------------------------------------------------------------------------
    def _begin_round(self) -> None:
        S = self.run.n_streams
        self.j = 0
        """Local steps done this round."""
        self.local: list[dict[str, torch.Tensor]] = []
        self.drafts: list[list[int]] = [[] for _ in range(S)]
        self.draft_logits: list[torch.Tensor] = []
        """Per drafted step: the draft policy's sampling logits (S, V) (greedy: its log-probabilities)."""
        self.drafting = [not self.ended[s] and self.k > 0 and self.frontier[s] < self.max_new - 1 for s in range(S)]
        self.futures: dict[int, Future] | None = None
        self.needed = 1 if self.row_kinds else 0
        """Local steps this round needs: one more than the most drafts a stream sent (known once sent)."""
        if not any(self.drafting) and not all(self.ended):
            self._send()

    @property
    def held(self) -> bool:
        """The round's local steps are done and its answers not yet verified: the rows wait (masked pads)."""
        return self.futures is not None and self.j >= self.needed

    def feed(self, kind: str) -> torch.Tensor:
        """The tokens this local step feeds the rows of `kind` (in their streams' order)."""
        streams = next(streams for _, k, streams, _ in self.row_kinds if k == kind)
        if self.j == 0:
            tokens = [self.pad_id if self.ended[s] else self.context[s][-1] for s in streams]
        else:
            tokens = [self.drafts[s][self.j - 1] if len(self.drafts[s]) >= self.j else self.pad_id for s in streams]
        return torch.tensor(tokens, dtype=torch.long)

    def local_step(self, logits: dict[str, torch.Tensor]) -> None:
        """Take a local step's logits (or the prefill's: the first round's step 0); draft where streams still do."""
        self.local.append({kind: value.float().cpu() for kind, value in logits.items()})
        self.j += 1
        if any(self.drafting):
            self._draft(self.local[-1])
            if not any(self.drafting):
                self._send()

    def _draft(self, local: dict[str, torch.Tensor]) -> None:
        run, config = self.run, self.run.config
        step = len(self.draft_logits)
        # The stand-in cut to its own top k, as the server's answers are: where the two models agree, so do q and p.
        standin = local["standin"]
        kth = standin.topk(min(self.remote.top_logprobs, standin.shape[-1]), dim=-1).values[:, -1:]
        logits = self._logits_at(len(self.local) - 1, standin.masked_fill(standin < kth, float("-inf")))
        _, policy_logprobs, _ = run.policy_logprobs(logits)
        positions = torch.tensor([self.frontier[s] + step for s in range(run.n_streams)])
        choice, filtered = sampling_logits(policy_logprobs, config, positions.clamp(max=self.max_new - 1), run.eos)
        if filtered is None:
            tokens = choice.argmax(-1)
            self.draft_logits.append(choice)
        else:
            uniforms = self._uniforms(positions, lambda t: self.run.step_uniforms(t))
            tokens = sample_coupled(filtered, uniforms)
            self.draft_logits.append(filtered)
        for s in range(run.n_streams):
            if not self.drafting[s]:
                continue
            token = int(tokens[s])
            self.drafts[s].append(token)
            position = self.frontier[s] + len(self.drafts[s])  # of the token after it
            if len(self.drafts[s]) == self.k or position >= self.max_new - 1 or token in self.eos:
                self.drafting[s] = False

    def _uniforms(self, positions: torch.Tensor, draw) -> torch.Tensor:
        """Each stream's uniform at its own position (its pair's; positions past the end draw nothing)."""
        run = self.run
        return torch.stack([draw(min(int(t), self.max_new - 1))[run.pair[s]] for s, t in enumerate(positions)])

    def _send(self) -> None:
        """One request a stream (streams asking the same share it): its context and drafts, scored at once."""
        asked: dict[tuple, Future] = {}
        self.futures = {}
        steered = set(self.run.steered)
        for s in range(self.run.n_streams):
            if self.ended[s]:
                continue
            key = (*self.context[s], *self.drafts[s])
            models = [None] + ([model for _, model in self.served] if s in steered else [])
            for model in models:
                if (key, model) not in asked:
                    asked[key, model] = self.remote.score(list(key), len(self.drafts[s]), model)
            self.futures[s] = [asked[key, model] for model in models]
        self.needed = (max(len(d) for d in self.drafts) + 1) if self.row_kinds else 0

    def pending(self) -> list[Future]:
        return [f for futures in (self.futures or {}).values() for f in futures if not f.done()]

    # --- verifying --------------------------------------------------------------------------------------------
    def poll(self) -> tuple[list[tuple], torch.Tensor | None]:
        """When the round's answers are in and its local steps done: verify, and start the next round.
        -> (the steps the run can take now: advance() arguments, each stream's KV entries to rewind (S,) or None).
        Raises the server's ApiBaseError."""
        if self.futures is None or self.j < self.needed or self.pending():
            return [], None
        answers = {s: [future.result() for future in futures] for s, futures in self.futures.items()}
        rewind = self._verify(answers)
        if not all(self.ended):
            self._begin_round()
        return self._commits(), rewind

    def _verify(self, answers: dict[int, list]) -> torch.Tensor:
        run, config, S = self.run, self.run.config, self.run.n_streams
        alive = {s for s in answers}
        kept = [0] * S
        stats = {"tokens": 0, "drafted": sum(len(self.drafts[s]) for s in answers), "rounds": len(answers)}
        for j in range(max(len(self.drafts[s]) for s in answers) + 1):
            at = sorted(s for s in alive if len(self.drafts[s]) >= j)
            if not at:
                break
            base = torch.full((S, self.remote.vocab_size), float("-inf"))
            base[:, self.pad_id] = 0.0  # streams not at this step: a finite placeholder, never read
            masses = {}
            for s in at:
                ids, logprobs = answers[s][0][j]
                base[s, self.pad_id] = float("-inf")
                base[s, ids] = torch.tensor(logprobs)
                masses[s] = sum(math.exp(lp) for lp in logprobs)
            logits = self._served_logits(j, base, answers) if self.served else self._logits_at(j, base)
            _, policy_logprobs, _ = run.policy_logprobs(logits)
            positions = torch.tensor([self.frontier[s] for s in range(S)])
            choice, filtered = sampling_logits(policy_logprobs, config, positions.clamp(max=self.max_new - 1), run.eos)
            target = choice if filtered is None else filtered
            drafted = [s for s in at if j < len(self.drafts[s])]
            tokens, accepted = {}, set()
            if drafted:
                rows = torch.tensor(drafted)
                draft = torch.tensor([self.drafts[s][j] for s in drafted])
                if filtered is None:
                    best = choice[rows].argmax(-1)
                    ok = best == draft
                    chosen = best
                else:
                    u = self._uniforms(positions[rows], run.verify_uniforms)
                    ok, chosen = verify_drafts(self.draft_logits[j][rows], target[rows], draft, u[:, 0], u[:, 1])
                tokens.update({s: int(c) for s, c in zip(drafted, chosen)})
                accepted = {s for s, o in zip(drafted, ok) if bool(o)}
            bonus = [s for s in at if j == len(self.drafts[s])]
            if bonus:
                rows = torch.tensor(bonus)
                if filtered is None:
                    chosen = choice[rows].argmax(-1)
                else:
                    chosen = sample_coupled(filtered[rows], self._uniforms(positions[rows], run.step_uniforms))
                tokens.update({s: int(c) for s, c in zip(bonus, chosen)})
            steered = {s: i for i, s in enumerate(run.steered)}
            for s in at:
                token = tokens[s]
                rows = {"base": logits["base"][s]}
                if s in steered:
                    rows.update({kind: value[steered[s]] for kind, value in logits.items() if kind != "base"})
                self.verified[s].append((token, rows, masses[s]))
                self.context[s].append(token)
                self.frontier[s] += 1
                stats["tokens"] += 1
                if s in accepted:
                    kept[s] += 1
                if s not in accepted or token in self.eos or self.frontier[s] >= self.max_new:
                    alive.discard(s)
                    if token in self.eos or self.frontier[s] >= self.max_new:
                        self.ended[s] = True
        self.remote.count(accepted=sum(kept), **stats)
        fed = self.needed - 1  # local steps 1.. fed drafts (or pads): those after the kept drafts are rewound
        return torch.tensor([max(fed - kept[s], 0) for s in range(S)])

    def _logits_at(self, j: int, base: torch.Tensor) -> dict[str, torch.Tensor]:
        """The run's logits at draft step j of every stream: the server's base, the local adapters' (and init's)."""
        logits = {"base": base}
        if not self.local:
            return logits
        local = self.local[j]
        logits.update({kind: value for kind, value in local.items() if kind not in ("standin",)})
        if self.run.use_adapter and "init" not in logits and "standin" in local:
            logits["init"] = local["standin"][self.run.steered_idx.cpu()]  # the adapter sits on the stand-in
        return logits

    def _served_logits(self, j: int, base: torch.Tensor, answers: dict[int, list]) -> dict[str, torch.Tensor]:
        """The run's logits at step j when the server serves the adapters too: each steered stream's base and
        adapters' top k on the union of their tokens (policy_math.topk_union); the residual combination's initial
        model is the served base itself (a LoRA sits on the model it is served with)."""
        run = self.run
        steered = run.steered_idx.cpu()
        rows = [base[steered].clone()] + [torch.full_like(base[steered], float("-inf")) for _ in self.served]
        for i, s in enumerate(run.steered):
            if s not in answers or len(answers[s][0]) <= j:
                rows[0][i] = base[s]
                for row in rows[1:]:
                    row[i] = base[s]  # a placeholder, never read
                continue
            for row, answer in zip(rows[1:], answers[s][1:]):
                ids, logprobs = answer[j]
                row[i, ids] = torch.tensor(logprobs)
        filled = topk_union(rows)
        logits = {"base": base.clone(), "init": filled[0]}
        logits["base"][steered] = filled[0]
        logits.update({kind: row for (kind, _), row in zip(self.served, filled[1:])})
        return logits

    def _commits(self) -> list[tuple]:
        """The steps every live stream has a verified token for: advance(logits, forced, base_mass) arguments."""
        run, out = self.run, []
        finished = run.finished.clone()
        while run.steps + len(out) < self.max_new:
            if not all(finished[s] or self.verified[s] for s in range(run.n_streams)):
                break
            entries = [None if finished[s] else self.verified[s].popleft() for s in range(run.n_streams)]
            placeholder = torch.full((self.remote.vocab_size,), float("-inf"))
            placeholder[self.pad_id] = 0.0
            logits = {"base": torch.stack([e[1]["base"] if e else placeholder for e in entries])}
            kinds = [k for _, k, _, _ in self.row_kinds if k != "standin"] + (["init"] if self._init_from_standin else [])
            kinds += [kind for kind, _ in self.served] + (["init"] if self.served else [])
            for kind in kinds:
                logits[kind] = torch.stack([entries[s][1][kind] if entries[s] else torch.zeros_like(placeholder)
                                            for s in run.steered])
            forced = torch.tensor([e[0] if e else self.pad_id for e in entries])
            mass = torch.tensor([e[2] if e else 1.0 for e in entries])
            out.append((logits, forced, mass))
            finished |= torch.tensor([bool(e) and e[0] in self.eos for e in entries])
            if bool(finished.all()):
                break
        return out

    @property
    def _init_from_standin(self) -> bool:
        kinds = {k for _, k, _, _ in self.row_kinds}
        return self.run.use_adapter and "standin" in kinds and "init" not in kinds
