"""The Open Inference Protocol's wire formats (JSON and Triton's binary tensor extension), below
every part that speaks them: the REST and gRPC APIs, durable jobs, embeddings."""
