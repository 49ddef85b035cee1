"""Write a synthetic multi-subject diffusion MRI dataset in BIDS layout, with its ground truth.

Each subject is a head-shaped phantom: scalp, skull, CSF, grey and white matter, two ventricles
and fibre bundles running left-right, inferior-superior and anterior-posterior, which cross in
places. Diffusion signals come from DIPY's tensor simulations (``single_tensor`` for one fibre
population, ``multi_tensor`` for crossings), with Rician noise. Subjects differ in head size,
position, diffusivities and SNR, all drawn from ``--seed``; the same arguments give the same bytes.

    python examples/dmri_workflow/make_data.py OUT_DIR --subjects 4 [--size 64 64 30] [--seed 0]

Layout (``OUT_DIR``)::

    dataset_description.json, participants.tsv, participants.json
    sub-01/dwi/sub-01_dwi.nii.gz, .bval, .bvec, .json
    derivatives/truth/sub-01/dwi/sub-01_dseg.nii.gz              tissue labels (see dseg.tsv)
    derivatives/truth/sub-01/dwi/sub-01_desc-brain_mask.nii.gz   intracranial mask
    derivatives/truth/sub-01/dwi/sub-01_model-tensor_param-{fa,md}_dwimap.nii.gz
                                                                 noise-free tensor maps
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

# Tissue labels of the ground truth (derivatives/truth/dseg.tsv).
BACKGROUND, SCALP, SKULL, CSF, GM, WM, VENTRICLE = range(7)
TISSUE_NAMES = {SCALP: "scalp", SKULL: "skull", CSF: "CSF", GM: "GM", WM: "WM",
                VENTRICLE: "ventricle"}
BRAIN_TISSUES = (CSF, GM, WM, VENTRICLE)  # inside the skull: what brain extraction must find

# Outer radius of each shell, as a fraction of the head ellipsoid (scalp is the outermost).
SHELLS = ((SCALP, 1.0), (SKULL, 0.9), (CSF, 0.82), (GM, 0.76), (WM, 0.64))

# b0 signal of each tissue relative to the brightest (fat-suppressed DWI: scalp is dim).
S0 = {SCALP: 0.3, SKULL: 0.05, CSF: 1.0, GM: 0.8, WM: 0.7, VENTRICLE: 1.0}

# Tensor eigenvalues (mm^2/s) before the subject's diffusivity scaling.
ISOTROPIC = {SCALP: 1.0e-3, SKULL: 0.3e-3, CSF: 3.0e-3, VENTRICLE: 3.0e-3}
GM_EVALS = (0.95e-3, 0.75e-3, 0.75e-3)
WM_EVALS = (1.1e-3, 0.55e-3, 0.55e-3)       # white matter outside the named bundles
BUNDLE_EVALS = (1.7e-3, 0.3e-3, 0.3e-3)
WM_DIRECTION = np.array([1.0, 1.0, 0.0]) / np.sqrt(2.0)
BUNDLE_DIRECTIONS = (np.array([1.0, 0.0, 0.0]),   # bit 0: left-right (callosal)
                     np.array([0.0, 0.0, 1.0]),   # bit 1: inferior-superior (corticospinal)
                     np.array([0.0, 1.0, 0.0]))   # bit 2: anterior-posterior (longitudinal)

N_DIRECTIONS = 33
B_VALUE = 1000.0
B0_POSITIONS = (0, 12, 24, 36)  # interleaved b0 volumes, as scanners acquire them
MAX_SHIFT_VOX = np.array([2.0, 2.0, 0.5])  # keep a margin of background round the head
INTENSITY = 1000.0              # b0 of the brightest tissue, in scanner units (stored as int16)


@dataclass(frozen=True)
class Subject:
    """What varies between subjects, drawn from the dataset seed."""

    label: str
    head_scale: float        # fraction of the largest head that fits the field of view
    shift_vox: tuple[float, float, float]
    diffusivity_scale: float
    snr: float               # b0 signal of the brightest tissue over the noise sigma
    age: int
    sex: str


def draw_subjects(n: int, seed: int) -> list[Subject]:
    """``n`` subjects with sizes, positions, diffusivities and SNRs drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    subjects = []
    for i in range(n):
        subjects.append(Subject(
            label=f"{i + 1:02d}",
            head_scale=round(float(rng.uniform(0.88, 1.0)), 4),
            shift_vox=tuple(round(float(v), 3) for v in rng.uniform(-1, 1, 3) * MAX_SHIFT_VOX),
            diffusivity_scale=round(float(rng.uniform(0.9, 1.1)), 4),
            snr=round(float(rng.uniform(25.0, 40.0)), 2),
            age=int(rng.integers(20, 70)),
            sex=str(rng.choice(["F", "M"])),
        ))
    return subjects


def gradient_scheme() -> tuple[np.ndarray, np.ndarray]:
    """b-values and unit b-vectors: 33 electrostatic-repulsion directions and 4 b0s.

    The same for every subject (one protocol per study), so it is drawn from a fixed seed.
    """
    from dipy.core.gradients import generate_bvecs

    directions = generate_bvecs(N_DIRECTIONS, iters=2000, rng=np.random.default_rng(1234))
    n = N_DIRECTIONS + len(B0_POSITIONS)
    bvals = np.full(n, B_VALUE)
    bvecs = np.zeros((n, 3))
    weighted = [i for i in range(n) if i not in B0_POSITIONS]
    bvals[list(B0_POSITIONS)] = 0.0
    bvecs[weighted] = directions
    return bvals, bvecs


def phantom_labels(shape: tuple[int, int, int], subject: Subject) -> tuple[np.ndarray, np.ndarray]:
    """Tissue labels and the bundle bitmask (bit k: in bundle k) of one subject's head."""
    grid = np.indices(shape, dtype=float)
    centre = (np.array(shape) - 1) / 2.0 + np.array(subject.shift_vox)
    # The head is longer front to back; leave a margin of background all round for noise fits.
    radii = np.array([0.40, 0.44, 0.42]) * np.array(shape) * subject.head_scale
    u, v, w = ((grid[i] - centre[i]) / radii[i] for i in range(3))
    rho = np.sqrt(u**2 + v**2 + w**2)

    tissue = np.zeros(shape, np.uint8)
    for label, outer in SHELLS:
        tissue[rho <= outer] = label
    ventricles = np.zeros(shape, bool)
    for side in (-1.0, 1.0):
        ventricles |= (((u - 0.12 * side) / 0.08) ** 2 + ((v - 0.08) / 0.3) ** 2
                       + ((w - 0.02) / 0.16) ** 2) <= 1.0
    tissue[ventricles & (tissue == WM)] = VENTRICLE

    left_right = (np.abs(v) < 0.16) & (np.abs(w - 0.3) < 0.15)
    inferior_superior = np.zeros(shape, bool)
    anterior_posterior = np.zeros(shape, bool)
    for side in (-1.0, 1.0):
        inferior_superior |= ((u - 0.34 * side) ** 2 + (v + 0.05) ** 2) < 0.15**2
        anterior_posterior |= ((u - 0.2 * side) ** 2 + (w + 0.15) ** 2) < 0.14**2
    bundles = np.zeros(shape, np.uint8)
    for bit, member in enumerate((left_right, inferior_superior, anterior_posterior)):
        bundles[member & (tissue == WM)] |= 1 << bit
    return tissue, bundles


def class_signal(gtab, tissue: int, bundle_bits: int, d_scale: float) -> np.ndarray:
    """Noise-free signal (S0 = 1) of one tissue class, from DIPY's tensor simulations."""
    from dipy.sims.voxel import all_tensor_evecs, multi_tensor, single_tensor

    if tissue in ISOTROPIC:
        evals = np.full(3, ISOTROPIC[tissue]) * d_scale
        return single_tensor(gtab, 1.0, evals=evals, evecs=np.eye(3), snr=None)
    if tissue == GM:
        return single_tensor(gtab, 1.0, evals=np.array(GM_EVALS) * d_scale,
                             evecs=all_tensor_evecs(np.array([0.0, 0.0, 1.0])), snr=None)
    if bundle_bits == 0:
        return single_tensor(gtab, 1.0, evals=np.array(WM_EVALS) * d_scale,
                             evecs=all_tensor_evecs(WM_DIRECTION), snr=None)
    sticks = [BUNDLE_DIRECTIONS[k] for k in range(3) if bundle_bits >> k & 1]
    if len(sticks) == 1:
        return single_tensor(gtab, 1.0, evals=np.array(BUNDLE_EVALS) * d_scale,
                             evecs=all_tensor_evecs(sticks[0]), snr=None)
    mevals = np.tile(np.array(BUNDLE_EVALS) * d_scale, (len(sticks), 1))
    fractions = [100.0 / len(sticks)] * len(sticks)
    signal, _ = multi_tensor(gtab, mevals, S0=1.0, angles=np.array(sticks), fractions=fractions,
                             snr=None)
    return signal


def simulate_subject(shape: tuple[int, int, int], gtab, subject: Subject,
                     rng: np.random.Generator) -> dict[str, np.ndarray]:
    """DWI (int16), tissue labels, brain mask and noise-free FA/MD of one subject.

    Signals are computed once per distinct (tissue, bundles) class and broadcast to its voxels,
    so generation costs a few DIPY calls rather than one per voxel.
    """
    from dipy.reconst.dti import TensorModel

    tissue, bundles = phantom_labels(shape, subject)
    classes = tissue.astype(np.int32) * 8 + bundles
    keys, index = np.unique(classes, return_inverse=True)
    index = index.reshape(shape)
    n_vols = len(gtab.bvals)
    signals = np.zeros((len(keys), n_vols))
    for row, key in enumerate(keys):
        t, bits = divmod(int(key), 8)
        if t != BACKGROUND:
            signals[row] = S0[t] * class_signal(gtab, t, bits, subject.diffusivity_scale)

    # Ground truth: the tensor that fits each noise-free class signal (exact for one fibre
    # population; for crossings it is what DTI reports without noise, the right reference).
    fit = TensorModel(gtab, fit_method="OLS").fit(np.maximum(signals, 1e-6))
    truth_fa = np.where(keys >= 8, np.nan_to_num(fit.fa), 0.0)
    truth_md = np.where(keys >= 8, fit.md, 0.0)

    clean = INTENSITY * signals[index]
    sigma = INTENSITY / subject.snr
    noisy = np.sqrt((clean + rng.normal(0.0, sigma, clean.shape)) ** 2
                    + rng.normal(0.0, sigma, clean.shape) ** 2)
    return {
        "dwi": np.clip(np.rint(noisy), 0, np.iinfo(np.int16).max).astype(np.int16),
        "dseg": tissue,
        "bundles": bundles,
        "mask": np.isin(tissue, BRAIN_TISSUES).astype(np.uint8),
        "fa": truth_fa[index].astype(np.float32),
        "md": truth_md[index].astype(np.float32),
        "sigma": np.float64(sigma),
    }


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Save as NIfTI (nibabel >= 4 writes gzip without a timestamp: reruns give equal bytes)."""
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def make_dataset(out_dir: str | os.PathLike, n_subjects: int,
                 shape: tuple[int, int, int] = (64, 64, 30), seed: int = 0,
                 voxel_mm: tuple[float, float, float] = (3.0, 3.0, 4.0)) -> list[Subject]:
    """Write the dataset and its ground truth to ``out_dir``; return the subjects drawn."""
    from dipy.core.gradients import gradient_table

    root = Path(out_dir)
    truth = root / "derivatives" / "truth"
    subjects = draw_subjects(n_subjects, seed)
    bvals, bvecs = gradient_scheme()
    gtab = gradient_table(bvals, bvecs=bvecs)
    affine = np.diag([*voxel_mm, 1.0])
    affine[:3, 3] = -np.array(voxel_mm) * (np.array(shape) - 1) / 2.0

    _write_json(root / "dataset_description.json", {
        "Name": "nipype-batch synthetic diffusion phantom", "BIDSVersion": "1.9.0",
        "DatasetType": "raw", "GeneratedBy": [{"Name": "examples/dmri_workflow/make_data.py"}],
        "License": "CC0"})
    _write_json(truth / "dataset_description.json", {
        "Name": "Ground truth of the synthetic phantom", "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "examples/dmri_workflow/make_data.py"}]})
    (truth / "dseg.tsv").write_text("index\tname\n" + "".join(
        f"{k}\t{v}\n" for k, v in TISSUE_NAMES.items()))
    _write_json(root / "participants.json", {
        "head_scale": {"Description": "head size relative to the largest"},
        "diffusivity_scale": {"Description": "factor on every diffusivity"},
        "snr": {"Description": "b0 of the brightest tissue over the Rician noise sigma"}})
    with open(root / "participants.tsv", "w") as fh:
        fh.write("participant_id\tage\tsex\thead_scale\tdiffusivity_scale\tsnr\tnoise_sigma\n")
        for s in subjects:
            fh.write(f"sub-{s.label}\t{s.age}\t{s.sex}\t{s.head_scale}\t{s.diffusivity_scale}"
                     f"\t{s.snr}\t{INTENSITY / s.snr:.4f}\n")

    for s in subjects:
        # one generator per subject: a subject's data do not depend on how many come before
        rng = np.random.default_rng([seed, int(s.label)])
        sim = simulate_subject(shape, gtab, s, rng)
        dwi_dir = root / f"sub-{s.label}" / "dwi"
        prefix = f"sub-{s.label}"
        _save(sim["dwi"], affine, dwi_dir / f"{prefix}_dwi.nii.gz")
        np.savetxt(dwi_dir / f"{prefix}_dwi.bval", bvals[None], fmt="%d")
        np.savetxt(dwi_dir / f"{prefix}_dwi.bvec", bvecs.T, fmt="%.6f")
        _write_json(dwi_dir / f"{prefix}_dwi.json", {"Synthetic": True,
                                                     "PhantomParameters": asdict(s)})
        out = truth / prefix / "dwi"
        _save(sim["dseg"], affine, out / f"{prefix}_dseg.nii.gz")
        _save(sim["bundles"], affine, out / f"{prefix}_desc-bundles_mask.nii.gz")
        _save(sim["mask"], affine, out / f"{prefix}_desc-brain_mask.nii.gz")
        _save(sim["fa"], affine, out / f"{prefix}_model-tensor_param-fa_dwimap.nii.gz")
        _save(sim["md"], affine, out / f"{prefix}_model-tensor_param-md_dwimap.nii.gz")
    return subjects


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="where to write the BIDS dataset")
    parser.add_argument("--subjects", type=int, default=4, help="number of subjects")
    parser.add_argument("--size", type=int, nargs=3, default=[64, 64, 30],
                        metavar=("X", "Y", "Z"), help="volume size in voxels")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    args = parser.parse_args(argv)
    if args.subjects < 1 or min(args.size) < 12:
        parser.error("need at least 1 subject and 12 voxels along each axis")
    subjects = make_dataset(args.out_dir, args.subjects, tuple(args.size), args.seed)
    print(f"wrote {len(subjects)} subjects of {'x'.join(map(str, args.size))} voxels "
          f"to {os.path.abspath(args.out_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
