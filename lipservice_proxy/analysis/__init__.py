"""The analysis loop: the proxy learns its own policy, off the hot path.

stats.py       PatternStats, the pipeline observer: rolling counts per (service, pattern), EMA baselines
state.py       known patterns and baselines kept across restarts, beside the policy
anomalies.py   spikes, error surges per service, new patterns (pure)
budget.py      which anomaly boosts fit in anomaly_boost.max_share, ranked by kind (pure)
clustering.py  TF-IDF + DBSCAN (cosine) families of near-duplicate templates (pure)
heuristic.py   volume target -> per-pattern rates, log-scaled (pure)
redact.py      what of a template may leave the process for an LLM (pure)
prompt.py      what the LLM is shown and what it may answer (pure)
llm.py         the OpenAI-compatible advisor: timeouts, bounded retry, hourly budget
guardrails.py  every candidate policy passes here before it is written (pure)
writer.py      atomic policy write with history
loop.py        AnalysisLoop: one pass every interval (`run_once`), and the /api/v1/patterns view
offline.py     `lipservice-proxy analyze`: one pass over a log file
"""
