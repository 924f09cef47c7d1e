"""Training with the disk cache."""


from tests.conftest import train_tiny


def test_train_with_the_disk_cache(brats_root, tmp_path):
    train_tiny(brats_root, tmp_path / "run", "--trainer.max_steps=2", "--data.cache=disk",
               f"--data.cache_dir={tmp_path / 'cache'}")
    assert len(list((tmp_path / "cache").glob("*/*.pt"))) == 3  # 2 training cases and the validation case
