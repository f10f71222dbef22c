"""ilijax: JAX-native implicit likelihood inference."""
