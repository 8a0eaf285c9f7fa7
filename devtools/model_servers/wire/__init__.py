"""Generated protobuf-upb messages for the Open Inference Protocol (`make protos`)."""
