"""Fleet mode: one analyzer, many samplers, one policy (proto/lipservice/v1/policy.proto).

    lipservice-proxy run --role analyzer     statistics of the whole fleet, the analysis loop (and its
                                             one LLM call per interval), the PolicyService on fleet.listen
    lipservice-proxy run --role sampler      receivers, sampler and exporters; reports its pattern counts
                                             to fleet.analyzer and takes the policy from its stream
    lipservice-proxy run --workers N         both on one host: the parent is the analyzer (on a private
                                             loopback port) and N sampler processes share the receiver ports

Pure parts: `reports` (a sampler's window of counts), `wire` (messages <-> the proxy's own types),
`feed` (what the analyzer publishes). I/O shells: `client` (sampler side), `server` and `analyzer`
(analyzer side), `workers` (the supervisor of `--workers`). `policy_pb2` is generated (`protogen`).
"""
