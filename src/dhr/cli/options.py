"""Options of the photo and bundle commands: ``--edit`` / ``--sweep`` parsing and the ``typer``
options that several commands share (declared once, ``OPT_*``, imported by the command modules)."""

from __future__ import annotations

from pathlib import Path

import typer

from dhr.errors import EditError

__all__ = ["DEFAULT_SWEEP", "parse_edit_options", "parse_sweep_option"]

DEFAULT_OUT = Path("dhr-out")


def parse_edit_options(specs: list[str]) -> list[dict[str, float]]:
    """``["age=+2", "smile=-1,yaw=0.5"]`` -> one dict per option (commas combine edits).

    Raises:
        EditError: On a malformed spec.
    """
    from dhr.editing import parse_edit_spec  # lazy: torch, only when a command runs

    edits = []
    for spec in specs:
        combo: dict[str, float] = {}
        for part in (s for s in spec.split(",") if s.strip()):
            name, strength = parse_edit_spec(part)
            combo[name] = strength
        if not combo:
            raise EditError(f"--edit {spec!r} is empty; give NAME=STRENGTH, e.g. --edit age=+2")
        edits.append(combo)
    return edits


DEFAULT_SWEEP = (-3.0, 3.0, 7)
"""``MIN, MAX, STEPS`` of ``--sweep NAME`` without a range."""


def parse_sweep_option(spec: str) -> tuple[str, tuple[float, ...]]:
    """``"age"`` -> ``("age", (-3, -2, ..., 3))``; ``"smile=-2:2:5"`` -> ``("smile", (-2, -1, 0, 1, 2))``.

    Args:
        spec: ``NAME`` or ``NAME=MIN:MAX:STEPS`` (STEPS >= 2 evenly spaced strengths, ends included;
            STEPS = 1 gives MIN only).

    Raises:
        EditError: On a malformed spec (the message shows the expected form).
    """
    from dhr.editing.directions import parse_edit_spec

    form = "expected NAME or NAME=MIN:MAX:STEPS, e.g. 'age' or 'age=-3:3:7'"
    if not isinstance(spec, str) or not spec.strip():
        raise EditError(f"--sweep {spec!r}: {form}")
    if "=" in spec:
        name, rng = (part.strip() for part in spec.split("=", 1))
    else:
        name, rng = spec.strip(), ""
    parse_edit_spec(f"{name}=0")  # validates the name
    if rng:
        parts = rng.split(":")
        if len(parts) != 3:
            raise EditError(f"--sweep {spec!r}: range {rng!r} must be MIN:MAX:STEPS; {form}")
        try:
            lo, hi = float(parts[0]), float(parts[1])
            steps = int(parts[2])
        except ValueError:
            raise EditError(f"--sweep {spec!r}: MIN and MAX must be numbers and STEPS an integer; {form}") from None
        from dhr.editing.directions import check_strength

        lo, hi = check_strength(lo, f"--sweep {spec!r} MIN"), check_strength(hi, f"--sweep {spec!r} MAX")
        if not 1 <= steps <= 100:
            raise EditError(f"--sweep {spec!r}: STEPS={steps} must be between 1 and 100")
    else:
        lo, hi, steps = DEFAULT_SWEEP
    if steps == 1:
        return name, (lo,)
    return name, tuple(round(lo + (hi - lo) * i / (steps - 1), 10) for i in range(steps))


MODEL_HELP = "Bundled model name (dhr models list) or a model folder."


_METHOD_HELP = "dhr (hybrid refinement), pti, feature, encoder or optim; default from --config (dhr)."


_PARSER_HELP = ("Face parser of DHR's segmentation: auto (the model's, landmarks for faces-64), landmarks (never "
                "marks anything out of domain), bisenet, farl (the reference's) or none. bisenet/farl need their "
                "weights (dhr weights list).")


_TRUST_PARSER_HELP = "Allow loading the farl TorchScript file without a registry digest (it runs code from the file)."


_PASTE_HELP = ("How edits go back into the photo: delta (add the change edit - inversion, the photo keeps its "
               "own detail), crop (replace the face by the model's crop) or auto (delta when the model's crop "
               "is smaller than the face in the photo). Recorded per face in run.json.")


_SET_HELP = ("KEY=VALUE config override, repeatable, applied last (e.g. --set segment.theta_skin=0.3 "
             "--set refine.steps=300).")


OPT_ALL_FACES = typer.Option(False, "--all-faces", help="Process every detected face.")


OPT_CONFIG = typer.Option(None, "--config", "-c", help="InvertConfig file (TOML/YAML/JSON).")


OPT_DEVICE = typer.Option("auto", "--device", help="auto (cuda > mps > cpu), cpu, cuda or mps.")


OPT_FACE_INDEX = typer.Option(None, "--face-index", help="Which face (0 = largest; default 0).")


OPT_JSON = typer.Option(False, "--json", help="JSON lines progress events on stdout.")


OPT_METHOD = typer.Option(None, "--method", help=_METHOD_HELP)


OPT_MODEL = typer.Option("faces-64", "--model", "-m", help=MODEL_HELP)


OPT_BATCH = typer.Option(1, "--batch", min=1, help="Invert N photos together (one engine call; each photo's "
                         "result as alone, failures stay per photo). Pays on a GPU with --set vectorize=true, "
                         "and on a CPU for a small model such as faces-64 (docs/performance.md).")

OPT_NO_RESUME = typer.Option(False, "--no-resume", help="Redo inputs finished by an earlier run into "
                              "the same --out (default: reuse them when input, model, config and "
                              "options match and their files read back).")


OPT_OOD_MASK = typer.Option(None, "--ood-mask", help="Your out-of-domain mask for the (single) "
                             "photo, white = keep as is (hands, glasses); replaces DHR's segmentation.")


OPT_OUT = typer.Option(DEFAULT_OUT, "--out", "-o", help="Output folder.")


OPT_PARSER = typer.Option("auto", "--parser", help=_PARSER_HELP)


OPT_PASTE = typer.Option("auto", "--paste", help=_PASTE_HELP)
OPT_PERCEPTUAL = typer.Option("model", "--perceptual", help="model (its own metric), alex, vgg or squeeze.")


OPT_QUIET = typer.Option(False, "--quiet", "-q", help="No progress output (failed inputs still get a line each on stderr).")


OPT_SEED = typer.Option(0, "--seed", help="Random seed (runs are reproducible).")


OPT_SET = typer.Option([], "--set", help=_SET_HELP)


OPT_SWEEP = typer.Option([], "--sweep", help="NAME[=MIN:MAX:STEPS], repeatable (default range "
                          "-3:3:7): per face a strength-sweep grid PNG, GIF and MP4 in sweeps/.")


OPT_TRUST_PARSER = typer.Option(False, "--trust-parser", help=_TRUST_PARSER_HELP)
OPT_WHOLE_IMAGE = typer.Option(False, "--whole-image", help="When no face is found, process the whole image "
                                "resized (recorded in run.json).")
