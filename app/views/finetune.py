"""Fine-tuning: accuracy, confusion matrix and learning curve of classifier runs; try a sentence."""

from __future__ import annotations

import streamlit as st

from labkit.errors import LabkitError
from labkit.inspect import classifier as clf
from labkit.inspect.attention import clean_text
from labkit.inspect.plots import confusion_matrix_figure, learning_curve_figure, metric_curve_figure
from labkit.inspect.run_tables import drop_empty_columns
from labkit.runs import run_kind

import common
from panels import share, ui

st.title("Fine-tuning")
share.begin()
all_infos = common.runs()
infos = [i for i in all_infos if not i.error and run_kind(i) == "classifier"]
common.note_unreadable(all_infos)
if not infos:
    st.info(f"No fine-tuning runs yet in `{common.root()}`. Fine-tune a pretrained run on SST-2 "
            "(`labkit finetune RUN`); its accuracy, confusion matrix and learning curve show here.")
    st.stop()

st.markdown("A pretrained language model already knows a lot about text; fine-tuning puts a small classifier on "
            "top and trains it on labelled sentences. The fair test of what pretraining bought is the same network "
            "trained **from scratch** on the same sentences: each condition below is drawn as its own line.")
rows = [clf.summary(i) for i in infos]
ui.table(drop_empty_columns(rows), "ft_table", {"accuracy": "{:.3f}", "val_accuracy": "{:.3f}", "train_size": "{:,.0f}",
                                                "training time (s)": "{:,.1f}"})

st.subheader("Learning curve")
points = [r for r in rows if r["train_size"] and r["accuracy"] is not None]
if points:
    conditions = sorted({str(r["condition"]) for r in points})
    st.caption(f"Test accuracy against the number of labelled training sentences (log axis), one point per run and "
               f"one line per condition ({', '.join(conditions)}); the dashed line is chance for two balanced classes.")
    ui.chart(learning_curve_figure(points), "ft_learning_curve")
else:
    st.caption("No run has both a train size and an accuracy yet.")

name = ui.pick_run("Run", [i.path.name for i in infos], "ft_run", param="run")
if name is None:
    st.stop()
info = next(i for i in infos if i.path.name == name)
common.quality_note(info)
summary = clf.summary(info)
left, right = st.columns(2)
with left:
    acc = summary["accuracy"]
    st.metric("accuracy (test)", f"{acc:.3f}" if acc is not None else "n/a")
    matrix = clf.confusion_matrix(info)
    if matrix:
        ui.chart(confusion_matrix_figure(matrix, clf.labels_of(info)), "ft_confusion")
    else:
        st.caption("This run's card has no confusion matrix.")
with right:
    table = clf.per_class(info)
    if table:
        ui.table(table, "ft_per_class", dict.fromkeys(("precision", "recall", "f1"), "{:.3f}"))
    steps, values = clf.accuracy_curve(info.path)
    if steps:
        ui.chart(metric_curve_figure(steps, values, name="validation accuracy"), "ft_val_curve")

st.subheader("Try a sentence")
sentence = st.text_input("Sentence", key="ft_sentence", value=share.shared(
    "sentence", "ft_sentence", "a gripping , beautifully acted film .", share.text()))


@st.cache_resource(max_entries=4, show_spinner="Loading the classifier...")
def classifier(path: str, stamp: tuple[int, int]) -> clf.Classifier:
    return clf.Classifier(path)


model, problem = None, None
try:
    model = classifier(str(info.path), common.stamp(info))
except FileNotFoundError:
    problem = "it has no saved weights"
except LabkitError as e:
    problem = str(e)
except Exception as e:  # a run from another version: say it, keep the page
    problem = f"{type(e).__name__}: {str(e)[:300]}"
if problem:
    st.error(f"**{name}** cannot be loaded for predictions: {problem}")
elif sentence.strip():
    try:
        prediction = model.predict(clean_text(sentence))
        st.markdown(f"Prediction: **{common.md_escape(prediction.label)}** with probability **{prediction.prob:.3f}**")
    except LabkitError as e:
        st.error(str(e))
else:
    st.caption("Type a sentence to classify.")
share.publish()
