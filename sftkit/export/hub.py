"""Pushing an export to the Hugging Face Hub (only when asked; never in tests)."""

from __future__ import annotations

from pathlib import Path

from sftkit.errors import MissingDependencyError, SftkitError


def push_folder(folder: Path, repo_id: str, *, private: bool = True) -> str:
    """Create `repo_id` if needed and upload `folder`; return the repo URL."""
    try:
        from huggingface_hub import HfApi
    except ImportError as exc:  # pragma: no cover - comes with transformers
        raise MissingDependencyError("huggingface_hub", "Pushing to the hub") from exc
    api = HfApi()
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            commit_message="Upload model exported by sftkit",
        )
    except Exception as exc:
        raise SftkitError(
            f"pushing {folder} to the hub as {repo_id!r} failed: {exc}",
            hint="Check the network and your token (`huggingface-cli login` or HF_TOKEN); the "
            "export itself is complete on disk.",
        ) from exc
    return str(url)
