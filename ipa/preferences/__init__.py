"""A class's preferences: the store of its blind votes (store: one small interface, SQLite in WAL mode by default) and
the preference model learned from them (learn: Bradley-Terry on MiniLM embeddings, its held-out agreement), which
ipa.rewards.preference scores text with as a reward block.

Above ipa.tasks (learn reports its agreement with ipa.tasks.metrics.win_rate), below everything that trains.
"""
