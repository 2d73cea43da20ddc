"""The model compiler: model -> IR of six layers -> stages -> memory plans -> blobs + headers."""
