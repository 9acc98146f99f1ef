"""Datasets a trial can train or evaluate on: one typed table of facts per dataset, one plain dict registry.

`synth` is the embedded default: generated driving scenes written in the real Cityscapes layout (trainers/data/synth.py)
and read by the same Cityscapes reader as the real download, so every test exercises the real file path. `synth_idd`
does the same for IDD (trainers/data/synth_idd.py): polygon JSON in the IDD layout, rasterised by our own rasteriser.

A dataset has one DatasetInfo per label set (`LABEL_SETS[name][label_set]`; the `label_set` field of DatasetConfig
and EvalSetConfig chooses); `DATASETS[name]` is its default label set (IDD: level3, Cityscapes: cs19).
"""
