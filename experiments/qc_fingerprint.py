"""The training fingerprint of a bundled model that predates fingerprints in plans, stored beside it.

Checkpoints trained by this medseg carry the fingerprint in their plan (medseg/data/datamodule.py). The bundled
brats.pt was trained before that, on data/brats_sample/train (its card says so), so its fingerprint is measured on
those cases through the model's own preprocessing and written to medseg/models/fingerprints.json with the plan's
preprocessing key (a model whose preprocessing changed no longer matches it and is not checked).

    python experiments/qc_fingerprint.py [--model brats] [--data data/brats_sample/train]
"""

import argparse
import json

from medseg.data.datasets import brats_cases
from medseg.data.intensity import training_fingerprint
from medseg.models import FINGERPRINTS, cards, resolve_model
from medseg.models.loading import load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="brats")
    parser.add_argument("--data", default="data/brats_sample/train")
    args = parser.parse_args()
    path = resolve_model(args.model)
    plan, _ = load_checkpoint(path)
    cases = brats_cases(args.data, plan.modalities)
    fingerprint = training_fingerprint(plan.case_transform(True), cases, plan.regions, plan.modalities)
    store = json.loads(FINGERPRINTS.read_text()) if FINGERPRINTS.is_file() else {}
    store[cards()[args.model]["file"]] = {"plan_key": plan.key(), "data": args.data, "fingerprint": fingerprint}
    FINGERPRINTS.write_text(json.dumps(store, indent=1) + "\n")
    print(f"wrote {FINGERPRINTS} ({args.model}: {len(cases)} cases)")


if __name__ == "__main__":
    main()
