"""The command-line tooling behind ``mmlab`` (no notebook imports it).

    cli          -- the ``mmlab`` command: run, list, copy, book, seeds, bench, doctor, cache, probe, rehearse
    runner       -- execute one notebook in a fresh kernel (progress, timeout, Ctrl-C, peak memory, stamps)
    run_all      -- ``mmlab run``: the notebooks side by side, the book, summary.json and the CPU yardstick
    lanes        -- how many notebooks at once, and threads per kernel
    allocator    -- TCMalloc for the kernels
    book         -- the static HTML book
    stamp        -- which code a notebook's stored outputs came from
    migrate      -- convert stamps and stored studies after a pure move, checked against the old code
    restamp      -- re-stamp stored studies after a change meant to change no figure, checked by the re-run
    seed_study   -- ``mmlab seeds``: the seed tables (2 threads; ``--suite``: one thread, two notebooks at once)
    probes       -- recipe probes: a notebook's recipe with fields overridden, over seeds
    bench        -- time budgets and the yardstick
    constraints  -- pins of the installed dependency closure of mmlab[dev]
    doctor       -- what this machine can run
    scratch      -- temporary working folders
    rehearsal    -- ``mmlab rehearse``: the notebooks' pretrained cells run against a local hub mirror
    hub_mirror   -- a local Hugging Face Hub: resolve, model info and tree routes, a request log
    hub_fixtures -- the checkpoints it serves: the real classes, tiny configs, the real repository ids
"""
