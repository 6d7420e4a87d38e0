"""Publishing checkpoints to the Hugging Face Hub: one upload helper for ``save_pairrm(push_to_hub=...)``,
``PairRM.push_to_hub``, ``pairrm convert --push-to-hub`` and ``pairrm distill --push-to-hub``."""

from __future__ import annotations

import os

__all__ = ["push_folder"]


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    message: str = "Upload PairRM checkpoint",
    revision: str | None = None,
) -> str:
    """Create the model repo ``repo_id`` if needed and upload every file of ``folder`` in one commit.

    Training leftovers (``training_args.bin``, ``checkpoint-*`` folders) stay local. Returns the commit URL.
    """
    from huggingface_hub import HfApi

    if not isinstance(repo_id, str) or repo_id.count("/") > 1 or not repo_id.strip("/"):
        raise ValueError(f"repo_id must be 'name' or 'owner/name', got {repo_id!r}")
    folder = os.fspath(folder)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise ValueError(f"{folder!r} holds no saved model (no config.json); save it before pushing")
    api = HfApi(token=token)
    repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    info = api.upload_folder(
        repo_id=repo.repo_id,
        folder_path=folder,
        commit_message=message,
        revision=revision,
        ignore_patterns=["training_args.bin", "checkpoint-*", "checkpoint-*/**"],
    )
    return str(getattr(info, "commit_url", info))
