"""Demo model servers that speak the real protocols, with knobs for failure and regression.

One process serves the Open Inference Protocol (KServe v2) over REST and gRPC
and an OpenAI-compatible chat/completions API (streamed as Server-Sent
Events) in front of tiny real models, with knobs for latency, time to first
chunk, errors (HTTP and gRPC status codes), readiness, keep-alive and a
regression that starts after N requests. Run it in-process (`ModelServer`),
as a subprocess (`ModelServerProcess`) or from the command line
(`python -m devtools.model_servers`). See devtools/README.md.
"""

from devtools.model_servers.knobs import Knobs
from devtools.model_servers.launcher import ModelServerProcess
from devtools.model_servers.server import ModelServer, ServerPorts

__all__ = ["Knobs", "ModelServer", "ModelServerProcess", "ServerPorts"]
