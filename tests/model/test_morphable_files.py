"""The morphable model loaders against small synthetic models written in the real file formats
(model/morphable/example_files.py): values against independent numpy ground truth, the cheap landmark path
against the full mesh, clear errors for missing and malformed files, and the restricted unpickler
refusing code (the payloads are built by hand and never run)."""

from __future__ import annotations

import os
import pickle
import struct

import numpy as np
import pytest
import torch

from datasets.weights import MissingWeightsError
from model.morphable import (
    MODEL_KINDS,
    ModelFileError,
    MorphableModel,
    load_morphable_model,
)
from model.morphable.example_files import face_mesh, make_model_files, py2_pickle_bytes
from model.morphable.safe_pickle import (
    ChArray,
    PickleRefusedError,
    load_npy_restricted,
    load_restricted,
)

ENV = {"bfm2009": "HEADFORGE_BFM2009", "bfm2017": "HEADFORGE_BFM2017", "flame": "HEADFORGE_FLAME"}
LANDMARK_ENV = {"bfm2017": "HEADFORGE_BFM2017_LANDMARKS", "flame": "HEADFORGE_FLAME_LANDMARKS"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """kind -> (model path, landmark path, truth), written once for the module."""
    root = tmp_path_factory.mktemp("morphable")
    return {kind: make_model_files(str(root / kind), kind) for kind in MODEL_KINDS}


@pytest.fixture(autouse=True)
def _no_model_env(monkeypatch):
    for var in list(ENV.values()) + list(LANDMARK_ENV.values()):
        monkeypatch.delenv(var, raising=False)


def _coefficients(model: MorphableModel, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randn(batch, model.n_id, generator=g)
    exp = torch.randn(batch, model.n_exp, generator=g) * model.exp_scale
    return ids, exp


def _close(actual: torch.Tensor, expected: np.ndarray, rtol: float = 1e-5):
    actual = actual.detach().double().cpu().numpy()
    assert actual.shape == expected.shape
    err = np.abs(actual - expected).max() / np.abs(expected).max()
    assert err < rtol, f"relative error {err:.2e}"


# ------------------------------------------------------------------------------------------- values


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_loaded_model_matches_truth(files, kind):
    path, lmk_path, truth = files[kind]
    model = load_morphable_model(kind, path, landmarks_path=lmk_path)
    defaults = {"bfm2009": (80, 64), "bfm2017": (80, 64), "flame": (100, 53)}[kind]
    assert (model.n_id, model.n_exp) == defaults
    assert model.unit == truth.unit
    assert model.faces.dtype == torch.int64 and np.array_equal(model.faces.numpy(), truth.faces)
    assert all(b.dtype in (torch.float32, torch.int64) for b in model.buffers())
    ids, exp = _coefficients(model, batch=4, seed=1)
    verts = model.vertices(ids, exp)
    assert verts.shape == (4, 478, 3)
    _close(verts, truth.vertices(ids.double().numpy(), exp.double().numpy()))
    _close(model.landmarks(ids, exp), truth.landmarks(ids.double().numpy(), exp.double().numpy()))
    # the coefficients matter: a different identity moves the mesh by millimetres
    moved = model.vertices(ids.roll(1, 0), exp) - verts
    assert moved.norm(dim=-1).mean() * model.unit > 1e-3
    info = model.describe()
    assert info["kind"] == kind and info["path"] == path and info["n_vertices"] == 478
    assert (info["n_id"], info["n_exp"], info["unit"]) == (model.n_id, model.n_exp, model.unit)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_landmark_path_equals_selection_on_full_mesh(files, kind):
    path, lmk_path, _ = files[kind]
    model = load_morphable_model(kind, path, landmarks_path=lmk_path, n_id=20, n_exp=10)
    ids, exp = _coefficients(model, batch=3, seed=2)
    verts = model.vertices(ids, exp)
    if kind == "flame":
        corners = verts[:, model.faces[model.lmk_faces]]  # [B, 68, 3, 3]
        expected = (corners * model.lmk_bary[None, :, :, None]).sum(2)
    else:
        expected = verts[:, model.landmark_index]
    lmk = model.landmarks(ids, exp)
    assert lmk.shape == (3, 68, 3)
    torch.testing.assert_close(lmk, expected, rtol=1e-5, atol=1e-6)


def test_flame_jaw_rotation_against_numpy_lbs(files):
    """Zero pose reproduces the shaped template; a jaw rotation moves the chin, not the forehead, and
    matches the independent numpy LBS (scipy rotations, 4x4 chains) of the helper."""
    path, lmk_path, truth = files["flame"]
    model = load_morphable_model("flame", path, landmarks_path=lmk_path, n_id=10, n_exp=5)
    ids, _ = _coefficients(model, batch=2, seed=3)
    blend = torch.randn(2, 5)
    rest = torch.cat([blend, torch.zeros(2, 3)], 1)
    open_jaw = torch.cat([blend, torch.tensor([[0.3, 0.0, 0.0], [0.2, 0.1, -0.05]])], 1)
    shaped = truth.mean + np.einsum("nck,bk->bnc", truth.id_basis[..., :10], ids.double().numpy()) \
        + np.einsum("nck,bk->bnc", truth.exp_basis[..., :5], blend.double().numpy())
    _close(model.vertices(ids, rest), shaped)
    _close(model.vertices(ids, open_jaw), truth.vertices(ids.double().numpy(), open_jaw.double().numpy()))
    moved = (model.vertices(ids, open_jaw) - model.vertices(ids, rest)).norm(dim=-1)[0]
    assert moved[152] > 5e-3 and moved[10] < 0.1 * moved[152]  # chin vs forehead (pose correctives only)


def test_coefficient_gradients(files):
    path, lmk_path, _ = files["flame"]
    model = load_morphable_model("flame", path, landmarks_path=lmk_path, n_id=4, n_exp=3).double()
    ids = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    exp = torch.zeros(2, 6, dtype=torch.float64)
    exp[1, -3:] = torch.tensor([0.2, -0.1, 0.05])
    exp.requires_grad_(True)
    assert torch.autograd.gradcheck(model.landmarks, (ids, exp), eps=1e-6, atol=1e-5)
    bfm = load_morphable_model("bfm2009", files["bfm2009"][0], n_id=5, n_exp=5)
    ids = torch.zeros(1, 5, requires_grad=True)
    bfm.landmarks(ids, torch.zeros(1, 5)).sum().backward()
    assert ids.grad is not None and ids.grad.abs().sum() > 0


def test_coefficient_counts_and_shapes_are_checked(files):
    path, _, _ = files["bfm2009"]
    with pytest.raises(ValueError, match="n_id=81"):
        load_morphable_model("bfm2009", path, n_id=81)
    model = load_morphable_model("bfm2009", path, n_id=10, n_exp=5)
    with pytest.raises(ValueError, match=r"expected \[B, 5\]"):
        model.vertices(torch.zeros(1, 10), torch.zeros(1, 6))
    with pytest.raises(ValueError, match="unknown morphable model kind"):
        load_morphable_model("sfm", path)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(files):
    for kind in MODEL_KINDS:
        path, lmk_path, _ = files[kind]
        cpu = load_morphable_model(kind, path, landmarks_path=lmk_path)
        gpu = load_morphable_model(kind, path, landmarks_path=lmk_path, device="cuda")
        ids, exp = _coefficients(cpu, batch=2, seed=4)
        torch.testing.assert_close(gpu.landmarks(ids.cuda(), exp.cuda()).cpu(), cpu.landmarks(ids, exp),
                                   rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------- files


def test_env_variables_name_files_or_folders(files, monkeypatch):
    for kind in MODEL_KINDS:
        path, lmk_path, _ = files[kind]
        monkeypatch.setenv(ENV[kind], os.path.dirname(path))  # the folder: found under its usual name
        if kind in LANDMARK_ENV:
            monkeypatch.setenv(LANDMARK_ENV[kind], lmk_path)
        model = load_morphable_model(kind)
        assert model.kind == kind and model.path == path
        assert model.describe()["landmarks_path"] == lmk_path


def test_missing_files_name_the_variable(files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for kind in MODEL_KINDS:
        with pytest.raises(MissingWeightsError, match=ENV[kind]):
            load_morphable_model(kind)
    with pytest.raises(MissingWeightsError, match="flame.is.tue.mpg.de"):
        load_morphable_model("flame", str(tmp_path / "generic_model.pkl"))
    for kind in ("bfm2017", "flame"):
        with pytest.raises(MissingWeightsError, match=LANDMARK_ENV[kind]):
            load_morphable_model(kind, files[kind][0])
    monkeypatch.setenv("HEADFORGE_BFM2017_LANDMARKS", str(tmp_path / "nowhere.txt"))
    with pytest.raises(MissingWeightsError, match="ships no iBUG-68"):
        load_morphable_model("bfm2017", files["bfm2017"][0])


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_garbage_bytes_are_a_model_file_error(kind, tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    lmk = tmp_path / "lmk.txt"
    lmk.write_text("\n".join(map(str, range(68))))
    with pytest.raises(ModelFileError) as info:
        load_morphable_model(kind, str(path), landmarks_path=str(lmk))
    assert str(path) in str(info.value) and "not a" in str(info.value)


def test_bfm2009_missing_key_and_bad_shape(tmp_path):
    import scipy.io

    path, _, _ = make_model_files(str(tmp_path / "ok"), "bfm2009")
    mat = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
    scipy.io.savemat(tmp_path / "no_id.mat", {k: v for k, v in mat.items() if k != "idBase"})
    with pytest.raises(ModelFileError, match=r"no_id\.mat: missing key 'idBase'"):
        load_morphable_model("bfm2009", str(tmp_path / "no_id.mat"))
    scipy.io.savemat(tmp_path / "short.mat", {**mat, "exBase": mat["exBase"][:-3]})
    with pytest.raises(ModelFileError, match=r"exBase has shape \[1431, 64\].*expected \[1434, K\]"):
        load_morphable_model("bfm2009", str(tmp_path / "short.mat"))
    scipy.io.savemat(tmp_path / "zero_based.mat", {**mat, "tri": mat["tri"] - 1})
    with pytest.raises(ModelFileError, match=r"tri holds indices 0\.\.\d+, expected 1\.\.478 \(1-based"):
        load_morphable_model("bfm2009", str(tmp_path / "zero_based.mat"))


def test_bfm2017_missing_dataset_and_bad_landmarks(tmp_path):
    import h5py

    path, lmk_path, _ = make_model_files(str(tmp_path), "bfm2017")
    with h5py.File(path, "a") as f:
        del f["expression/model/pcaVariance"]
    with pytest.raises(ModelFileError, match="missing dataset 'expression/model/pcaVariance'"):
        load_morphable_model("bfm2017", path, landmarks_path=lmk_path)
    good, _, _ = make_model_files(str(tmp_path / "good"), "bfm2017")
    short = tmp_path / "short.txt"
    short.write_text("1 2 3\n")
    with pytest.raises(ModelFileError, match=r"short\.txt: holds 3 values"):
        load_morphable_model("bfm2017", good, landmarks_path=str(short))
    far = tmp_path / "far.npy"
    np.save(far, np.arange(68) + 1000)
    with pytest.raises(ModelFileError, match=r"far\.npy: .*expected 0\.\.477"):
        load_morphable_model("bfm2017", good, landmarks_path=str(far))


def _flame_dict(path: str) -> dict:
    with open(path, "rb") as f:
        return load_restricted(f.read())


def test_flame_missing_key_and_bad_shapes(files, tmp_path):
    path, lmk_path, _ = files["flame"]
    model = _flame_dict(path)
    bad = tmp_path / "no_posedirs.pkl"
    bad.write_bytes(py2_pickle_bytes({k: v for k, v in model.items() if k != "posedirs"}))
    with pytest.raises(ModelFileError, match="missing key 'posedirs'"):
        load_morphable_model("flame", str(bad), landmarks_path=lmk_path)
    bad = tmp_path / "few_dirs.pkl"
    bad.write_bytes(py2_pickle_bytes({**model, "shapedirs": model["shapedirs"][:, :, :200]}))
    with pytest.raises(ModelFileError, match=r"shapedirs has shape \[478, 3, 200\], expected \[478, 3, K\]"):
        load_morphable_model("flame", str(bad), landmarks_path=lmk_path)
    bad = tmp_path / "flat_dirs.pkl"
    bad.write_bytes(py2_pickle_bytes({**model, "shapedirs": model["shapedirs"].reshape(478 * 3, 400)}))
    with pytest.raises(ModelFileError, match=r"shapedirs has shape \[1434, 400\]"):
        load_morphable_model("flame", str(bad), landmarks_path=lmk_path)


def test_flame_landmark_embedding_variants(files, tmp_path):
    path, lmk_path, _ = files["flame"]
    ref = load_morphable_model("flame", path, landmarks_path=lmk_path)
    with open(lmk_path, "rb") as f:
        embedding = load_npy_restricted(f.read()).item()
    flat = tmp_path / "flat.pkl"  # [68] / [68, 3] instead of [1, 68] / [1, 68, 3], as a plain pickle
    flat.write_bytes(py2_pickle_bytes({"lmk_face_idx": embedding["full_lmk_faces_idx"].reshape(68),
                                       "lmk_b_coords": embedding["full_lmk_bary_coords"].reshape(68, 3)}))
    model = load_morphable_model("flame", path, landmarks_path=str(flat))
    ids, exp = _coefficients(model, 2, seed=5)
    torch.testing.assert_close(model.landmarks(ids, exp), ref.landmarks(ids, exp))
    ringnet = tmp_path / "flame_static_embedding.pkl"
    ringnet.write_bytes(py2_pickle_bytes({"lmk_face_idx": embedding["static_lmk_faces_idx"].astype(np.uint32),
                                          "lmk_b_coords": embedding["static_lmk_bary_coords"]}))
    with pytest.raises(ModelFileError, match="51-point static embedding"):
        load_morphable_model("flame", path, landmarks_path=str(ringnet))
    other_mesh = tmp_path / "other.npy"
    np.save(other_mesh, {**embedding, "full_lmk_faces_idx": embedding["full_lmk_faces_idx"] + 9000})
    with pytest.raises(ModelFileError, match="belongs to another mesh"):
        load_morphable_model("flame", path, landmarks_path=str(other_mesh))


# ------------------------------------------------------------------------------------------- safety


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _unicode(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _flame_like(value_ops: bytes) -> bytes:
    """A protocol-2 pickle of {'v_template': <value_ops>, ...} whose first entry is the payload."""
    return b"\x80\x02}q\x00(" + _unicode("v_template") + value_ops + _unicode("f") + b"N" + b"u."


def _call_pickle(module: str, name: str, arg: str | list, proto: int) -> bytes:
    """A FLAME-like pickle whose v_template is module.name(arg), with GLOBAL (protocol 2) or
    STACK_GLOBAL (protocol 4: the names come from the stack, only find_class sees them)."""
    if proto == 4:
        short = [b"\x8c" + bytes([len(s)]) + s.encode() for s in (module, name)]  # SHORT_BINUNICODE
        callee = short[0] + short[1] + b"\x93"
    else:
        callee = _global(module, name)
    if isinstance(arg, list):
        args = b"]" + b"".join(_unicode(a) + b"a" for a in arg) + b"\x85"
    else:
        args = _unicode(arg) + b"\x85"
    data = _flame_like(callee + args + b"R")
    return b"\x80\x04" + data[2:] if proto == 4 else data


@pytest.mark.parametrize("module,name,proto", [("os", "system", 2), ("posix", "system", 2),
                                              ("builtins", "eval", 4), ("__builtin__", "eval", 2),
                                              ("subprocess", "check_call", 4)])
def test_code_in_a_pickle_is_refused_and_not_run(files, tmp_path, module, name, proto):
    marker = tmp_path / "ran"
    arg = {"eval": f"open({str(marker)!r}, 'w').write('x')", "check_call": ["touch", str(marker)]}.get(
        name, f"touch {marker}")
    # the same bytes with a harmless callable are a well-formed pickle that calls it
    harmless = _call_pickle("builtins" if proto == 4 else "__builtin__", "len", arg, proto)
    assert pickle.loads(harmless, encoding="latin1")["v_template"] == len(arg)
    data = _call_pickle(module, name, arg, proto)
    bad = tmp_path / "generic_model.pkl"
    bad.write_bytes(data)
    with pytest.raises(ModelFileError, match=rf"refused to load {module}\.{name}"):
        load_morphable_model("flame", str(bad), landmarks_path=files["flame"][1])
    with pytest.raises(PickleRefusedError):
        load_restricted(data)
    assert not marker.exists()


@pytest.mark.parametrize("ops,opcode", [(b"\x80\x02" + _unicode("abc") + b"Q.", "BINPERSID"),
                                        (b"\x80\x02Pabc\n.", "PERSID"),
                                        (b"\x80\x02\x82\x01.", "EXT1"),
                                        (b"\x80\x05\x97.", "NEXT_BUFFER")])
def test_forbidden_opcodes_are_refused(files, tmp_path, ops, opcode):
    bad = tmp_path / "generic_model.pkl"
    bad.write_bytes(ops)
    with pytest.raises(ModelFileError, match=f"refused: opcode {opcode}"):
        load_morphable_model("flame", str(bad), landmarks_path=files["flame"][1])


def test_landmark_embedding_goes_through_the_restricted_unpickler(files, tmp_path):
    path, _, _ = files["flame"]
    marker = tmp_path / "ran"
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (), }"
    header += b" " * (63 - len(header) % 64) + b"\n"
    payload = _global("os", "system") + _unicode(f"touch {marker}") + b"\x85R."
    bad = tmp_path / "landmark_embedding.npy"
    bad.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\x80\x02" + payload)
    with pytest.raises(ModelFileError, match=r"refused to load os\.system"):
        load_morphable_model("flame", path, landmarks_path=str(bad))
    assert not marker.exists()


def test_build_cannot_rewrite_the_stand_ins():
    """BUILD aimed at a stand-in class or an allowed callable fails instead of changing it."""
    before = dict(vars(ChArray))
    attack = _global("chumpy.ch", "Ch") + b"}" + _unicode("__setstate__") + b"Ns" + b"b."
    with pytest.raises(pickle.UnpicklingError):
        load_restricted(b"\x80\x02" + attack)
    slots = _global("chumpy.ch", "Ch") + b"N}" + _unicode("__setstate__") + b"N" + b"s\x86b."
    with pytest.raises(pickle.UnpicklingError):
        load_restricted(b"\x80\x02" + slots)
    codec = _global("_codecs", "encode") + b"N}" + _unicode("_fn") + b"N" + b"s\x86b."
    with pytest.raises(PickleRefusedError):
        load_restricted(b"\x80\x02" + codec)
    assert dict(vars(ChArray)) == before
    with pytest.raises(PickleRefusedError, match="only latin-1"):
        load_restricted(b"\x80\x02" + _global("_codecs", "encode") + _unicode("x") + _unicode("zlib_codec") + b"\x86R.")


def test_face_mesh_helper_is_a_face():
    verts, faces, ibug = face_mesh()
    assert verts.shape == (478, 3) and faces.max() < 468 and len(set(ibug.tolist())) == 68
    assert verts[ibug[45], 0] > verts[ibug[36], 0]  # subject's left eye corner at +x
