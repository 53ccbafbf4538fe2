"""Running a model fast: precision, BatchNorm folding, compiled libraries, memory, benchmarks, export."""
