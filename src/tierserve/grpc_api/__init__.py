"""The Open Inference Protocol over gRPC (Triton's ``GRPCInferenceService``), beside the REST API.

``tierserve serve --grpc-port 8001`` serves it on its own port from the same engine, with the same
tiers, authentication, limits, audit and errors as the REST routes (see ``service.py``).
"""
