"""The paper's Table 3 methods: what each trains on, and how reports name them."""

from __future__ import annotations

# method -> (shots, objective); "k" is ExperimentConfig.few_shot_k. None: no training.
METHODS: dict[str, tuple[int | str, str] | None] = {
    "no_ft": None,
    "zero_shot": (0, "mask_last_target"),
    "few_shot_last": ("k", "mask_last_target"),
    "few_shot_all": ("k", "mask_all_targets"),
    "many_shot_ar": ("max", "autoregressive"),
    "many_shot_last": ("max", "mask_last_target"),
    "many_shot_all": ("max", "mask_all_targets"),
    "task_level": (0, "mask_last_target"),  # one adapter per held-out task, trained on that task
}
LABELS = {
    "no_ft": "No fine-tuning",
    "zero_shot": "Zero-shot FT",
    "few_shot_last": "Few-shot FT (mask last)",
    "few_shot_all": "Few-shot FT (mask all)",
    "many_shot_ar": "Many-shot FT (autoregressive)",
    "many_shot_last": "Many-shot FT (mask last)",
    "many_shot_all": "Many-shot FT (mask all, ours)",
    "task_level": "Task-level FT",
}
META = ("zero_shot", "few_shot_last", "few_shot_all", "many_shot_ar", "many_shot_last", "many_shot_all")
BASELINES = ("no_ft", "zero_shot", "few_shot_last", "few_shot_all", "many_shot_ar", "many_shot_last")
"""What the method of the paper (many_shot_all) is compared with."""
