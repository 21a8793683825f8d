"""mmlab: runnable answers to five multimodal-ML interview questions.

Modules (import what you need; importing has no side effects):
    data     -- ShapesWorld, digits(), photos()
    runtime  -- device(), seed_everything(), online(), the safetensors cache
    train    -- the one training loop every notebook uses
    plot     -- image grids, bar charts, training curves
"""

__version__ = "0.1.0"
