"""Ray Serve application: retrieval -> intent -> ranking over HTTP and gRPC."""
