# medseg on a GPU workstation: the official CUDA PyTorch image with medseg installed on top, run as a non-root user.
#
#   docker build -t medseg .
#   docker run --rm --gpus all --shm-size=8g --user "$(id -u):$(id -g)" \
#       -v /data/BraTS2021_Training_Data:/data:ro -v "$PWD/runs":/runs \
#       medseg train --config configs/brats.yaml --data.root=/data --trainer.default_root_dir=/runs/brats
#
# The base is pinned by tag and digest, so a rebuild gets the same CUDA, cuDNN and torch; its torch is the version
# CI pins (.ci/run), and the project goes on top with CI's `python -m pip install` (CI adds -e and the test extra).
# The recipes and the demo sample go into the installed package (`--config brats`, `medseg demo`); configs/ also
# stays in the working directory. No other data, runs or credentials are copied in (.dockerignore admits only what
# is COPYed); mount data and runs, and pass WANDB_API_KEY with -e at run time.
FROM pytorch/pytorch:2.13.0-cuda12.6-cudnn9-runtime@sha256:6acf597eeb8e376a96580dde4952f37cc017fef732bb40bfc73f28f25e3f64b4

# The image's Python is the system one, marked externally managed (PEP 668): medseg goes next to the image's torch.
# HOME is writable by any uid, so `--user "$(id -u):$(id -g)"` works (wandb keeps settings and caches there).
ENV PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/medseg

WORKDIR /opt/medseg
COPY pyproject.toml README.md ./
COPY medseg ./medseg
COPY configs ./configs
COPY data/brats_sample ./data/brats_sample
RUN python -m pip install --no-cache-dir . \
    && groupadd --gid 10001 medseg \
    && useradd --no-log-init --uid 10001 --gid 10001 --create-home --home-dir /home/medseg medseg \
    && chmod 1777 /home/medseg

USER 10001:10001
ENTRYPOINT ["medseg"]
CMD ["--help"]
