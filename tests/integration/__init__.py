"""Black-box tests that start real ``tierserve`` processes and talk HTTP to them."""
