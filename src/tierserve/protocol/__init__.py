"""The Open Inference Protocol's bodies (JSON and Triton's binary tensor extension), one codec for
all four directions: ``tensors`` reads and writes the tensor entries every body holds; ``codec``
is the server's directions (request in, response out: REST, jobs, embeddings), ``client`` the
client's (request out, response in: the remote backend). ``codec`` builds the engine's request
objects, so it sits above the engine; ``tensors`` and ``client`` sit below the backends."""
