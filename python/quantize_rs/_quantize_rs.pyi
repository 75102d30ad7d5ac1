"""Type stubs of the native module (the Rust half of quantize_rs). Each function takes one JSON
request and returns one JSON reply, ``{"ok": ...}`` or ``{"error": {"kind", "message",
"details"}}``. Use the functions of the quantize_rs package; these are an implementation detail."""

__version__: str
ENGINE_ID: str

def run(request_json: str, /) -> str:
    """{input, output, recipe, base_dir, force, progress} -> the job's outcome."""

def resolve_recipe(recipe_json: str, /) -> str:
    """A recipe -> the same, checked, every default filled in."""

def model_info(request_json: str, /) -> str:
    """{path} -> the engine's ModelInfo, with text and opset."""

def validate(request_json: str, /) -> str:
    """{original, quantized, data, samples, detailed, min_snr_db, input_shapes, image} -> Validation."""

def benchmark(request_json: str, /) -> str:
    """{original, quantized, data, runs, warmup, input_shapes} -> Benchmark."""
