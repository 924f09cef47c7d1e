"""Held-out numbers of an EM neuron run (docs/em-generalization.md): each decoder at its validation-chosen setting,
scored on the reported half-crop and on its two other-contrast copies.

    python -m medseg.data.conversion.fibsem ../shared/data/gala_fibsem_em data/fibsem
    medseg train --config configs/em_fibsem.yaml --data.datalist=data/fibsem/train2test.json \
        --trainer.default_root_dir=runs/train2test
    python experiments/em_generalization.py runs/train2test data/fibsem/train2test.json --json runs/train2test.json

The run's best.ckpt was chosen on the validation half and its decoding tuned there (checkpoints/
decode_tuning.json); for every decoding method the best row of that table is applied, unchanged, to the `test`
half of the datalist (never seen in training or selection), to `-sd34` (intensities scaled around the mean to an sd
x 34/55) and `-gamma` (gamma 1.5) copies of it. The method the model stores is the validation winner.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from medseg.data.io import read_volume
from medseg.em.decode import DecodeParams, decode
from medseg.evaluation.metrics import instance_metrics
from medseg.inference.predictor import Predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the training run folder (checkpoints/best.ckpt inside)")
    parser.add_argument("datalist", type=Path, help="train2test.json or test2train.json (data.conversion.fibsem)")
    parser.add_argument("--json", type=Path, help="write the table here too")
    args = parser.parse_args()
    ckpt = args.run / "checkpoints" / "best.ckpt"
    table = json.loads((ckpt.parent / "decode_tuning.json").read_text())
    fields = set(DecodeParams.__dataclass_fields__)
    per_method: dict[str, dict] = {}
    for row in table["rows"]:  # best first
        per_method.setdefault(row["method"], row)
    report = json.loads(args.datalist.read_text())["test"][0]
    image = Path(report["image"])
    variants = {"report": image, "sd34": image.with_name(image.stem + "-sd34.h5"),
                "gamma": image.with_name(image.stem + "-gamma.h5")}
    predictor = Predictor(ckpt, device="cpu")
    convention = predictor.plan.convention
    truth = np.asarray(read_volume(report["label"]).array, dtype=np.int64)
    rows = []
    for variant, path in variants.items():
        probabilities = predictor.predict_case([str(path)]).probabilities
        for method, chosen in per_method.items():
            params = DecodeParams(**{k: v for k, v in chosen.items() if k in fields})
            ids = decode(probabilities, convention.targets, params, convention.offsets)
            scores = instance_metrics(ids, truth)
            rows.append({"volume": variant, "method": method, "stored": chosen is table["rows"][0],
                         "params": {k: v for k, v in chosen.items() if k in fields},
                         "validation_cremi": chosen["cremi"], "validation_adapted_rand_error":
                         chosen["adapted_rand_error"], "validation_voi": chosen["voi"], "segments": int(ids.max()),
                         **{k: scores[k] for k in ("adapted_rand_error", "voi_split", "voi_merge", "voi")}})
            r = rows[-1]
            print(f"{variant:7s} {method:9s}{' (stored)' if r['stored'] else '         '} merge_below "
                  f"{params.merge_below} min_distance {params.min_distance}: ARand {r['adapted_rand_error']:.3f} "
                  f"VOI {r['voi_split']:.2f} + {r['voi_merge']:.2f} = {r['voi']:.2f}, {r['segments']} segments "
                  f"(validation: ARand {chosen['adapted_rand_error']:.3f}, VOI {chosen['voi']:.2f})", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"checkpoint": str(ckpt), "report": report, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
