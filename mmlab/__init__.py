"""mmlab: runnable answers to five multimodal-ML interview questions.

Modules (import what you need; importing has no side effects):
    data     -- ShapesWorld, digits(), photos()
    runtime  -- device(), seed_everything(), online(), the safetensors cache
    train    -- the one training loop every notebook uses
    plot     -- image grids, bar charts, training curves
    show     -- print a library function's source on the page (the idea, read where it is taught)
"""

from mmlab.source import show

__version__ = "0.1.0"
__all__ = ["show"]
