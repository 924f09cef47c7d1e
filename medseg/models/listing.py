"""`medseg models`: the bundled models, what they take and give, and how well they did on held-out scans."""

from medseg.errors import MedsegError
from medseg.models import DEFAULT_EM, DEFAULT_MRI, bundled_path, cards
from medseg.models.loading import load_checkpoint


def list_models() -> int:
    for name, card in cards().items():
        try:
            plan, _ = load_checkpoint(bundled_path(name))
        except MedsegError as e:
            print(f"{name}: unavailable ({e})")
            continue
        default = " (default for MRI)" if name == DEFAULT_MRI else " (default for EM)" if name == DEFAULT_EM else ""
        grid = f"{plan.spacing} mm" if plan.spacing else f"native grid, voxel size {card.get('voxel_size', '?')}"
        print(f"{name}{default}: {card['description']}")
        print(f"  inputs:  {', '.join(plan.modalities)} (matched by file name, or --channels)")
        print(f"  outputs: {card['outputs']} (regions {', '.join(plan.regions)}; convention {plan.label_convention})")
        print(f"  network: {plan.arch} with {plan.net['block']} blocks, widths {plan.net['channels']}; "
              f"predicts at {grid}")
        if card.get("members"):
            files = ", ".join([card["file"], *card["members"]])
            print(f"  ensemble: the mean of {1 + len(card['members'])} networks' probabilities ({files}; the first's "
                  "network and plan are shown)")
        if plan.decode:
            print(f"  decoding: {', '.join(f'{k} {v}' for k, v in plan.decode.items())} (chosen on validation data; "
                  "medseg predict flags override)")
        if plan.lesion_flair_z is not None:
            print(f"  postprocessing: FLAIR-dark edema and lesions whose FLAIR 75th percentile is below "
                  f"{plan.lesion_flair_z} brain SDs are dropped (--lesion-flair-z off turns it off)")
        if plan.keep_largest:
            print("  postprocessing: only the largest connected lesion is kept (--no-keep-largest turns it off)")
        print(f"  measured: {card['measured']}")
        if "budget" in card:
            print(f"  training: {card['budget']}")
        print(f"  data / licence: {card['licence']}")
    return 0
