"""IPA: Inference-Time Policy Adapters (Lu et al., EMNLP 2023). The method, in layers that import only downward
(tests/test_layers.py keeps it so):

1. errors, files             the one UserError and the rule for numbers a user gives; directories written whole
2. models, placement         loading the embedded and hub models, the device and dtype, the output layer
3. rewards, tasks            one module a reward (REWARDS); the six tasks, their data, scoring and metrics
4. preferences               a class's blind votes (the store) and the preference model learned from them
5. policy_adapter            LoRA adapters by name on one frozen model, their cards
6. decoding                  the formula (policy_math), one run's state (run), the engine, the reference loop,
                             the token inspector, a remote base
7. loading                   a tailored policy from a base and adapter folders
8. training                  config, one RL step, the loop and its checkpoints; pg and Quark
9. evaluation                what the page and the benchmarks share: paper metrics, baselines, composition
10. commands                 the `ipa` command line

app/ (the web playground) and bench/ (benchmark scripts) sit on top, side by side.
"""
