"""Train a small classifier on scikit-learn's bundled digits data set.

Prints progress per epoch and writes the fitted model to ./outputs/model.pkl.

    python train.py --epochs 10 --learning-rate 0.01
"""

import argparse
import os
import pickle
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds to wait after each epoch, to watch it live")
    args = parser.parse_args()

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data / 16.0, digits.target, test_size=0.25, random_state=args.seed
    )
    print(f"digits: {len(x_train)} training and {len(x_test)} test images, {args.epochs} epochs", flush=True)

    model = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=args.learning_rate, random_state=args.seed)
    classes = np.unique(digits.target)
    for epoch in range(1, args.epochs + 1):
        started = time.perf_counter()
        model.partial_fit(x_train, y_train, classes=classes)
        loss = log_loss(y_test, model.predict_proba(x_test), labels=classes)
        accuracy = accuracy_score(y_test, model.predict(x_test))
        print(f"epoch {epoch:3d}  loss {loss:.4f}  accuracy {accuracy:.4f}  ({time.perf_counter() - started:.3f}s)", flush=True)
        time.sleep(args.pause)

    os.makedirs("outputs", exist_ok=True)
    with open(os.path.join("outputs", "model.pkl"), "wb") as handle:
        pickle.dump(model, handle)
    print(f"saved outputs/model.pkl (final accuracy {accuracy:.4f})", flush=True)


if __name__ == "__main__":
    main()
