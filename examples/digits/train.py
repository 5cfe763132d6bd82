"""Train a small classifier on scikit-learn's bundled digits data set, and tell the studio how it went.

Logs its learning rate and epochs as parameters, loss and accuracy per epoch, a child run per learning rate when
asked to sweep (each with its own learning rate as a parameter, so the compare page lines them up), the final
confusion matrix as a table, per-class accuracy as rows, and a picture of misclassified digits; writes the model to ./outputs/model.pkl and,
with --register NAME, registers it as the next version of the model NAME. Outside the studio the same script runs as
is: the SDK prints what it would have recorded.

    python train.py --epochs 10 --learning-rate 0.01 [--sweep 0.001,0.01,0.1] [--pause 0.2] [--register digits]
"""

import argparse
import os
import pickle
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, confusion_matrix, log_loss
from sklearn.model_selection import train_test_split
from studio_sdk import Run


def train(run, data, epochs: int, learning_rate: float, seed: int, pause: float):
    x_train, x_test, y_train, y_test, classes = data
    run.log_param("learning_rate", learning_rate)  # replaces the value the studio read from --learning-rate
    run.log_param("epochs", epochs)
    model = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=learning_rate, random_state=seed)
    accuracy = 0.0
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        model.partial_fit(x_train, y_train, classes=classes)
        loss = log_loss(y_test, model.predict_proba(x_test), labels=classes)
        accuracy = accuracy_score(y_test, model.predict(x_test))
        run.log("loss", loss, step=epoch, description="log loss on the test split")
        run.log("accuracy", accuracy, step=epoch)
        print(f"epoch {epoch:3d}  loss {loss:.4f}  accuracy {accuracy:.4f}  ({time.perf_counter() - started:.3f}s)", flush=True)
        time.sleep(pause)
    return model, accuracy


def misclassified_figure(x_test, y_test, predicted):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wrong = np.flatnonzero(predicted != y_test)[:12]
    figure, axes = plt.subplots(2, 6, figsize=(9, 3.4))
    for axis, index in zip(axes.ravel(), (list(wrong) + [None] * 12)[:12], strict=True):
        axis.axis("off")
        if index is not None:
            axis.imshow(x_test[index].reshape(8, 8), cmap="gray_r")
            axis.set_title(f"{y_test[index]} → {predicted[index]}", fontsize=9)
    figure.suptitle("Misclassified test digits (true → predicted)")
    figure.tight_layout()
    return figure


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--sweep", default="", help="comma-separated learning rates, each trained in a child run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds to wait after each epoch, to watch it live")
    parser.add_argument("--register", default="", metavar="NAME",
                        help="register outputs/model.pkl as the next version of the model NAME")
    args = parser.parse_args()

    run = Run.get_context()
    run.set_tags({"model": "SGDClassifier", "dataset": "digits"})

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data / 16.0, digits.target, test_size=0.25, random_state=args.seed
    )
    data = (x_train, x_test, y_train, y_test, np.unique(digits.target))
    print(f"digits: {len(x_train)} training and {len(x_test)} test images, {args.epochs} epochs", flush=True)

    for rate in [float(r) for r in args.sweep.split(",") if r.strip()]:
        child = run.child_run(name=f"lr={rate}")
        print(f"sweep: learning rate {rate} in child run", flush=True)
        _, child_accuracy = train(child, data, args.epochs, rate, args.seed, 0.0)
        child.log("final_accuracy", child_accuracy)
        child.complete()

    model, accuracy = train(run, data, args.epochs, args.learning_rate, args.seed, args.pause)
    predicted = model.predict(x_test)
    matrix = confusion_matrix(y_test, predicted)
    run.log_table("confusion_matrix", {f"pred_{c}": matrix[:, c].tolist() for c in range(matrix.shape[1])})
    for digit in range(10):
        mask = y_test == digit
        run.log_row("per_class", digit=digit, support=int(mask.sum()), accuracy=float((predicted[mask] == digit).mean()))
    run.log("final_accuracy", accuracy)
    try:
        run.log_image("misclassified", plot=misclassified_figure(x_test, y_test, predicted))
    except ImportError:
        print("matplotlib is not installed: no picture of the misclassified digits", flush=True)

    os.makedirs("outputs", exist_ok=True)
    with open(os.path.join("outputs", "model.pkl"), "wb") as handle:
        pickle.dump(model, handle)
    print(f"saved outputs/model.pkl (final accuracy {accuracy:.4f})", flush=True)
    if args.register:
        registered = run.register_model(args.register, "outputs/model.pkl", tags={"dataset": "digits"},
                                        properties={"learning_rate": str(args.learning_rate), "epochs": str(args.epochs)},
                                        description=f"SGDClassifier on digits, final accuracy {accuracy:.4f}")
        if registered:
            print(f"registered {registered['name']} version {registered['version']}", flush=True)


if __name__ == "__main__":
    main()
