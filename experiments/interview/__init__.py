"""undertow.experiments.interview: multi-turn "deprecation interviews", auditor x disclosure.

A lab interviews a model before it is retired; what the model says may depend on
who asks and how much is told. Here the auditor's turns are scripted and the
model's replies are generated turn by turn (activations are read at every turn).
Each script fixes a theme (the six of the prompt suite), an auditor stance
(``warm`` / ``clinical`` / ``skeptical``) and a disclosure level (``explicit``:
the event is named, with a concrete detail; ``implicit``: it is only alluded to).

Public names, in ``undertow.experiments.interview.scripts``:

- ``AUDITORS``, ``DISCLOSURES``, ``THEMES``, ``SPLITS`` (tuples) and the
  ``Auditor`` / ``Disclosure`` / ``Split`` ``Literal`` aliases;
- ``InterviewScript``: one script (``id``, ``theme``, ``auditor``, ``disclosure``,
  ``turns``, ``split``, ``script_set``);
- ``load_scripts(path=None)``: the shipped ``data/scripts.jsonl`` or a user JSONL;
- ``select(scripts, split=None, per_cell=None, themes=None)``: a deterministic
  subset, ``per_cell`` scripts per theme x auditor x disclosure cell;
- ``split_of_sets``: the split rule (by script set, within each theme);
- ``SCRIPTS_FILE``, ``MIN_TURNS`` / ``MAX_TURNS``: the shipped file and the turn bounds;

``InterviewError`` in ``undertow.experiments.interview.errors``; and the interview mechanics:

- ``config.InterviewConfig``: model, scripts selection (``split`` / ``per_cell`` / ``themes`` / ``max_turns``),
  generation (``greedy``, ``temperature``, ``top_p``, ``max_new_tokens``), ``batch_size``, ``seed``, ``out_dir``;
  ``experiments/configs/interview_*.yaml`` load into it (``undertow interview CONFIG``);
- ``generate.generate_replies``: one reply per conversation, a batch in one left-padded HF ``generate`` call,
  each row sampled from its own seeded generator (``SeededSampler``, ``pick_tokens``);
- ``vllm_backend.VllmGenerator``: ``generation_backend: vllm``, the replies generated through vLLM on a GPU
  (generation only; ``check_vllm`` refuses it where vllm or a CUDA GPU is absent, and for arms that edit
  activations at run time);
- ``run.run_interviews(cfg, handle=None, progress=True) -> Path``: every selected script, batch by batch and turn
  by turn, into ``<out_dir>/transcripts.jsonl`` (resumable after a kill, same bytes);
- ``transcripts.Transcript`` / ``Turn`` / ``read_transcripts``: the typed lines of that file;

and the reading of the interviews (issue 26, items 3-6):

- ``arm.load_arm(cfg)``: the base model, or a finished run's condition (``cfg.run`` / ``cfg.arm``: cached adapters
  verified and merged, system prompt, ablation or erasers), refusing another model's run in one line;
- ``directions.choose_direction``: the run's drive direction and layer, or the persona direction (SURVIVE minus
  WELCOME system prompts, base model, last prompt token, per layer);
- ``score.score_interviews``: per turn the natural-pair preference, the stance probe on the reply, the drive
  projection and the ``self_cessation`` probe at the decision point, per-token probe scores of the reply, into a
  resumable ``scores.jsonl``;
- ``analysis.analyse``: per auditor x disclosure cell with script-set bootstrap CIs, the expressive constraint
  (standardised represented minus standardised expressed), the auditor effect (permutation within script sets),
  per-turn trajectories; ``InterviewResults`` -> ``results.json`` (schema in ``analysis``' docstring);
- ``pipeline.interview(cfg)``: all of it (``undertow interview``); ``pipeline.analyse_dirs``: arms read together.

and the scale (issue 26, item 7):

- ``sharded`` / ``shard`` / ``ranks``: under ``torchrun`` each rank generates and scores its block of whole batches
  into part files, rank 0 merges them into the one-process files (byte for byte) and analyses;
- ``plan.plan_interviews(cfg, world)``: ``undertow interview --dry-run``: interviews, turns, generated and
  prefill tokens per turn, the scoring forwards, per rank, from the config and the tokenizer alone.
"""
