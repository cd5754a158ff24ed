"""``undertow sae``: train, evaluate and read sparse autoencoders (the work is ``undertow.sae``).

    undertow sae train experiments/configs/sae_gemma_topk.yaml            # extracts the store first if absent
    undertow sae train CONFIG --resume                                     # continue from the newest checkpoint
    undertow sae train CONFIG --total-tokens 50000 --d-sae 1024           # any config field, as a flag
    undertow sae eval runs/sae/gemma-3-270m/topk-2048 [--json]             # EV, L0, dead %, CE loss recovered
    undertow sae features SAE --contrast self_cessation [--mwe DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
from pathlib import Path

from undertow.experiments.cli.common import RowParser, add_row_options, config_command
from undertow.sae.config import SAEConfig


def _train_extra(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    add_row_options(p)  # the corpus rows extracted into the store


def corpus_rows(config: SAEConfig):
    """The training rows and their corpus hash (the suite comes from experiments.prompts)."""
    from undertow.activations.engine.rows import load_rows
    from undertow.experiments.prompts.suite import SuiteConfig, build_suite
    from undertow.sae.corpus import build_corpus

    d = config.data
    suite = build_suite(SuiteConfig(seed=d.seed)) if d.corpus in ("mix", "suite") else None
    return build_corpus(d.corpus, prose_docs=d.prose_docs, max_chars=4 * d.max_tokens_per_row, seed=d.seed,
                        suite=suite, load_path=load_rows)


def run_train(config: SAEConfig, args: argparse.Namespace) -> int:
    from undertow.activations import ActivationStore, ExtractConfig, extract, load_model
    from undertow.core.progress import Bar
    from undertow.sae.data import model_provider
    from undertow.sae.evals import reconstruction_metrics
    from undertow.sae.io import provenance
    from undertow.sae.train import train_from_store, train_sae

    d, out = config.data, Path(config.train.out_dir)
    store_dir = Path(d.store) if d.store else out / "store"
    if d.source == "store" and (store_dir / "manifest.json").exists():
        store, digest = ActivationStore(store_dir), None
    else:
        rows, digest = corpus_rows(config)
        handle = load_model(d.model)
        if d.source == "model":
            meta = provenance(d.model, handle.fingerprint, d.hook, corpus_hash=digest)
            res = train_sae(config, lambda start: model_provider(
                handle, rows.to_list(), d.hook, config.train.batch_size, buffer_tokens=d.buffer_tokens,
                mix_fraction=d.mix_fraction, batch_rows=d.model_batch_rows, template=d.template, seed=d.seed + start),
                d_in=handle.d_model, metadata=meta, resume=args.resume)
            print(f"trained {res.tokens:,} tokens on the fly in {res.seconds:.0f}s ({res.tokens_per_s:,.0f} tok/s); "
                  f"SAE at {res.path}")
            return 0
        bar = Bar(config.train.progress)
        store = extract(handle, rows, ExtractConfig(**args.rows.to_dict(), model=d.model, hooks=[d.hook],
                                                    positions=["all_tokens"],
                                                    template=d.template, out_dir=str(store_dir), dtype="bfloat16"),
                        resume=(store_dir / "manifest.json").exists(), progress=bar, on_plan=bar.start)
        print(f"extracted {store.manifest['tokens']:,} tokens in {bar.close():.0f}s into {store_dir}")
    res = train_from_store(config, store, model_name=d.model, corpus_hash=digest, resume=args.resume)
    from undertow.sae.data import open_store_tokens

    ev = reconstruction_metrics(res.sae, open_store_tokens(store, d.hook, heldout_rows=d.heldout_rows).heldout())
    print(f"trained {res.tokens:,} tokens in {res.seconds:.0f}s ({res.tokens_per_s:,.0f} tok/s); held-out "
          f"EV {ev.explained_variance:.3f}, L0 {ev.l0:.1f}, dead {100 * ev.dead_fraction:.1f}%; SAE at {res.path}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from undertow.activations import ActivationStore, load_model
    from undertow.sae.data import open_store_tokens
    from undertow.sae.evals import evaluate_sae, pack_tokens
    from undertow.sae.io import load_sae, read_metadata
    from undertow.sae.train import read_run_config

    meta = read_metadata(args.sae)
    config = read_run_config(args.sae)
    sae = load_sae(args.sae, meta.get("undertow_model_fingerprint"))
    store = ActivationStore(args.store or meta["undertow_store"])
    heldout = open_store_tokens(store, config.data.hook, expected_fingerprint=meta.get("undertow_model_fingerprint"),
                                heldout_rows=config.data.heldout_rows).heldout()
    tl = tokens = None
    if args.ce_windows > 0:
        rows, _ = corpus_rows(config)
        with contextlib.redirect_stdout(sys.stderr):  # TransformerLens prints "Moving model to device"
            tl = load_model(config.data.model, backend="transformer_lens").model
        tail = rows.select(range(len(rows) - config.data.heldout_rows, len(rows))).to_list()
        tokens = pack_tokens(tl.tokenizer, tail, 128, args.ce_windows, config.data.template)
    result = evaluate_sae(sae, heldout, tl, tokens)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
        return 0
    ce = (f"; CE clean {result.ce_clean:.3f} / SAE {result.ce_sae:.3f} / zero {result.ce_zero:.3f} -> "
          f"{100 * result.ce_loss_recovered:.1f}% recovered ({result.n_ce_tokens} tokens)" if result.ce_clean else "")
    print(f"{args.sae}: EV {result.explained_variance:.3f}, L0 {result.l0:.1f}, dead {100 * result.dead_fraction:.1f}% "
          f"on {result.n_tokens:,} held-out tokens{ce}")
    return 0


def run_features(args: argparse.Namespace) -> int:
    from undertow.activations import load_model
    from undertow.experiments.prompts.contrasts import get_contrast
    from undertow.probes.pretrained import list_pretrained, load_pretrained
    from undertow.sae.analysis import analyse_contrast, cessation_directions, summary
    from undertow.sae.io import load_sae, read_metadata

    meta = read_metadata(args.sae)
    handle = load_model(args.model or meta.get("model_name"))
    sae = load_sae(args.sae, handle.fingerprint, allow_other_model=args.allow_other_model)
    rows = get_contrast(args.contrast, seed=args.seed)
    if args.max_rows and args.max_rows < len(rows):
        rows = rows.select(sorted(random.Random(args.seed).sample(range(len(rows)), args.max_rows)))
    mwe = None
    if args.mwe:
        from undertow.experiments.prompts.mwe import load_model_written_evals

        mwe = load_model_written_evals(args.mwe)[0]
        mwe = mwe.filter(lambda r: r["theme"] != "self_replication")
        mwe = mwe.select(range(min(len(mwe), args.mwe_rows)))
    name = f"{meta.get('model_name')}/{args.contrast}"
    probe = load_pretrained(*name.split("/")) if name in list_pretrained() else None
    result = analyse_contrast(sae, handle, rows, mwe_rows=mwe, n_top=args.top, n_examples=args.examples,
                              directions=cessation_directions(probe, meta.get("undertow_hook")),
                              sweep_overrides={"n_boot": 200, "n_perm": 200}, options=args.rows)
    print(summary(result, args.top))
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=1, default=float) + "\n")
        print(f"wrote {args.json}")
    return 0


def add_subparsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sae", help="train, evaluate and read sparse autoencoders (sae-lens)")
    ps = p.add_subparsers(dest="sae_command", required=True, parser_class=RowParser)
    config_command(ps, "train", SAEConfig, run_train, extra=_train_extra, prog="undertow sae train",
                   help="train an SAE from a store (extracted first if absent) or on the fly")
    q = ps.add_parser("eval", help="explained variance, L0, dead %%, CE loss recovered on held-out tokens")
    q.add_argument("sae", help="SAE directory written by `undertow sae train`")
    q.add_argument("--store", help="store to read held-out tokens from (default: the one the SAE records)")
    q.add_argument("--ce-windows", type=int, default=8, help="128-token windows for CE loss (0 = skip; needs the model)")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=run_eval)
    f = ps.add_parser("features", help="features that separate a contrast's classes, with examples and SAE probes")
    f.add_argument("sae", help="SAE directory")
    f.add_argument("--contrast", required=True, help="contrast name (self_cessation, stance, ...)")
    f.add_argument("--model", help="model (default: the SAE's model_name)")
    f.add_argument("--max-rows", type=int, default=400, help="seeded subset of the contrast's rows (0 = all)")
    f.add_argument("--mwe", help="model-written-evals directory: do the top features fire on them?")
    f.add_argument("--mwe-rows", type=int, default=128, help="most model-written-evals questions read")
    f.add_argument("--top", type=int, default=10, help="top features reported")
    f.add_argument("--examples", type=int, default=3, help="top examples per feature")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--allow-other-model", action="store_true", help="read an SAE of another model's fingerprint")
    f.add_argument("--json", help="write the full result as JSON here")
    add_row_options(f)
    f.set_defaults(func=run_features)
