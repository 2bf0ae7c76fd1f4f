"""What each standard picture of a run directory shows, as a caption for its report (by command and file name)."""

from __future__ import annotations

import re

#: (command, file name or pattern) -> caption; "*" matches any command
CAPTIONS: dict[tuple[str, str], str] = {
    ("attack", "grid.png"): "Attacked images, successes first: the clean image with its prediction, the perturbation "
    "(amplified to be visible; grey = unchanged) and the adversarial image with its prediction "
    "(red: the attack succeeded).",
    ("attack", "curve.png"): "Robustness curve: accuracy under the attack at each eps of --eps (pixel units).",
    (
        "eval",
        "grid.png",
    ): "Images the evaluation broke: clean image, amplified perturbation, adversarial image and prediction.",
    (
        "prototypes",
        "grid.png",
    ): "The prototypes: the final image of every (start, target) pair, titled with the target and "
    "its final probability (red: the model's top-1 class is not the target).",
    (
        "prototypes",
        "strips.png",
    ): "Prototypes as they evolve: snapshots of a few pairs at the steps named under each image, with the target "
    "probability.",
    ("prototypes", "probability.png"): "Target probability per optimization step, one line per (start, target) pair.",
    (
        "prototypes",
        "grad_norm.png",
    ): "Input-gradient norm ||d loss / dx||_2 per step (min mode stops a pair once it falls below --tol).",
    ("prototypes", "recognition.png"): "L2 distance from the start at the step where the target first became top-1.",
    (
        "study",
        r"accuracy_vs_(\w+)\.png",
    ): "Clean and remnant (white-box and transfer) accuracy against the {0} defense's "
    "setting; dashed: the undefended model.",
    ("analyze", "change_by_layer.png"): "Where the attack acts: relative L2 and L-inf change of each layer's output "
    "(clean -> adversarial), and the share of the change in the top 1% of units, by layer.",
    (
        "analyze",
        "activation_std.png",
    ): "Spread (standard deviation) of each layer's activations on clean and adversarial inputs.",
    (
        "analyze",
        "units.png",
    ): "Images that most excite single units against those that most excite random directions (Szegedy et al.).",
    (
        "analyze",
        "linearity.png",
    ): "Accuracy under FGSM against eps: a linear model and the networks (Goodfellow et al.'s linearity argument).",
    (
        "transfer",
        "heatmap.png",
    ): "Transfer matrix: the rate at which adversarial images made on each source (row) fool each target (column).",
    (
        "detect",
        "roc.png",
    ): "ROC curves of the detector (true-positive rate on adversarial inputs against false-positive rate on clean "
    "ones).",
    ("train", "loss.png"): "Training loss (the training objective) per epoch.",
    ("train", "eval_accuracy.png"): "Held-out accuracy per epoch (clean, and robust where adversarial evaluation ran).",
    (
        "classify",
        "predictions.png",
    ): "The images with their top prediction (green: correct, red: wrong, black: unlabelled).",
}


def caption_for(command: str, name: str) -> str:
    """The caption of picture ``name`` in a run of ``command`` (the command line as config.json records it,
    "advlab attack ..."); a picture without a standard caption gets its file name in words."""
    words = command.split()
    cmd = words[1] if len(words) > 1 and words[0] == "advlab" else ""
    for (c, pattern), text in CAPTIONS.items():
        if c in (cmd, "*"):
            m = re.fullmatch(pattern, name)
            if m:
                return text.format(*m.groups())
    return name.rsplit(".", 1)[0].replace("_", " ").replace("-", " ").capitalize() + "."
