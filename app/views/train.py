"""Train: start a pretraining (family, preset, steps) or a fine-tuning (body, labelled sentences, from
scratch or not) from the browser, watch its loss curve while it trains, stop it (a checkpoint, as
Ctrl-C makes) and resume it. The server trains one run at a time (labkit.train.queue): the others
wait in line and each shows its place. The runs are ordinary run directories: every page shows them,
and `labkit pretrain --name RUN --resume` continues one. In class mode it works the same: every
student's job goes to the one queue."""

from __future__ import annotations

import streamlit as st

from labkit.demo import sst2_on_disk, wikitext2_on_disk
from labkit.errors import LabkitError
from labkit.inspect.curves import load_curves
from labkit.inspect.plots import loss_figure
from labkit.presets import SIZES, resolve_preset
from labkit.recorder import TimelineRecorder
from labkit.runs import STALE, RunDir, run_kind, run_status
from labkit.train.jobs import FAMILIES, MODES, Finetune, Pretrain
from labkit.train.queue import Job, default_queue

import common
from panels import ui

JOBS = "train_jobs"  # session key: the ids of the jobs this session put in line
LIVE = "train_live"  # session key: whether a job was active when the page last looked
SHOWN = 5  # the latest runs of this session shown with their curves

st.title("Train")
st.markdown("Start a run here and watch it learn. The server trains **one run at a time**: others wait in line, and "
            "each shows its place. **Stop** ends a run the way Ctrl-C does (the step finishes and a checkpoint is "
            "saved); **Resume** continues it from there. The runs go to the runs folder like any other: every page "
            "shows them, and `labkit pretrain --name RUN --resume` continues one from the command line too.")
queue = default_queue()
root = common.root()
if getattr(common, "class_mode", lambda: False)():
    st.caption("Class mode: this server trains for the whole class, one run at a time; yours waits in line with "
               "everyone else's.")


def ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def put_in_line(start, what: str) -> None:
    """Call `start()` (it puts a job in line and gives its id), remember the job, and redraw the page."""
    try:
        job_id = start()
    except (LabkitError, OSError) as e:
        st.error(f"Cannot start {what}: {e}")
        return
    st.session_state[JOBS] = [*st.session_state.get(JOBS, []), job_id]
    st.rerun()


def kind_of(path) -> str:
    """"lm" or "classifier": what the run at `path` is (its config says)."""
    try:
        return str(RunDir(path).load_config().get("kind", "lm"))
    except LabkitError:
        return "?"


def recorder(path) -> list:
    """The callbacks `labkit pretrain` adds to a language model's training: its timeline (Watch it learn)."""
    return [TimelineRecorder()] if kind_of(path) == "lm" else []


def pretrain_form() -> None:
    corpora = ["synthetic", *(["wikitext-2"] if wikitext2_on_disk() else [])]
    c1, c2, c3, c4 = st.columns(4)
    corpus = c1.selectbox("Corpus", corpora, key="train_corpus",
                          help="synthetic: made up by labkit, an English-like grammar (no download); WikiText-2 when it "
                               "is on this server's disk.")
    size = c2.selectbox("Preset", SIZES, key="train_preset",
                        help="tiny: seconds on a CPU; demo: a minute or two; laptop: 10 minutes on a 2-core CPU; "
                             "classic and medium: much longer (GPU sizes).")
    family = c3.radio("Family", FAMILIES, horizontal=True, key="train_family")
    train = resolve_preset(size, family)["train"]
    steps = c4.number_input("Steps", 1, 10_000_000, min(train["max_steps"], 10_000_000), key=f"train_steps_{size}_{family}")
    if train.get("time_budget_s"):
        st.caption(f"This preset also stops after {train['time_budget_s'] / 60:.0f} minutes of training, whatever the steps.")
    name = st.text_input("Run name (empty: named like `labkit pretrain` names it)", key="train_name").strip()
    if st.button("Start pretraining", type="primary", key="train_start"):
        put_in_line(lambda: queue.submit(Pretrain(size, family, int(steps), corpus), root, name or None,
                                         callbacks=[TimelineRecorder()]), "the pretraining")


def finetune_form() -> None:
    infos, _ = common.language_models()
    if not infos:
        st.info(f"No language-model run with weights in `{root}` yet: pretrain one first (above, **pretrain**).")
        return
    tasks = ["number", *(["sst2"] if sst2_on_disk() else [])]
    c1, c2, c3 = st.columns(3)
    body = c1.selectbox("Body (a pretrained run)", [i.path.name for i in infos], key="train_body")
    task = c2.selectbox("Task", tasks, key="train_task",
                        help="number: is a phrase's head noun singular or plural (made up by labkit, no download); "
                             "sst2: movie-review sentiment, when it is on this server's disk.")
    labels = c3.number_input("Labelled sentences (0: all)", 0, 100_000, 1000, step=100, key="train_labels",
                             help="How many labelled training sentences it learns from: fewer show what pretraining buys.")
    c4, c5, c6 = st.columns(3)
    scratch = c4.toggle("From scratch", key="train_scratch",
                        help="The same network with random weights instead of the body's: the comparison that shows "
                             "what pretraining gave.")
    mode = c5.radio("Mode", MODES, horizontal=True, key="train_mode",
                    help="full: every weight trains; frozen: only the new head; gradual: the head first, then one "
                         "more layer group from the top each epoch.")
    steps = c6.number_input("Steps", 1, 1_000_000, 200, key="train_ft_steps")
    name = st.text_input("Run name (empty: named like `labkit finetune` names it)", key="train_ft_name").strip()
    if st.button("Start fine-tuning", type="primary", key="train_ft_start"):
        what = Finetune(body, task, int(labels) or None, scratch, mode, int(steps))
        put_in_line(lambda: queue.submit(what, root, name or None), "the fine-tuning")


def describe(job: Job) -> str:
    w = job.what
    if isinstance(w, Pretrain):
        steps = f"{w.steps:,}" if w.steps else "the preset's"
        return f"pretraining a {w.preset} {w.family} on {w.corpus}, {steps} steps"
    if isinstance(w, Finetune):
        sentences = f"{w.train_size:,}" if w.train_size else "all"
        how = "from scratch" if w.from_scratch else w.mode
        return f"fine-tuning {w.base} on {w.task} ({how}), {sentences} labelled sentences, {w.steps:,} steps"
    return "continued from its latest checkpoint (Resume)"


def command(job: Job) -> str:
    kind = "finetune" if kind_of(job.path) == "classifier" else "pretrain"
    return f"labkit {kind} --name {job.name} --runs-dir {job.runs_dir} --resume"


def result(card: dict) -> str:
    """What a finished run reached, from its card."""
    def num(key: str, spec: str) -> str:
        value = card.get(key)
        return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"

    if card.get("kind") == "classifier":
        return f"test accuracy {num('accuracy', '.3f')}"
    return f"validation perplexity {num('best_val_ppl', ',.2f')}, test {num('test_ppl', ',.2f')}"


def places(jobs: list[Job]) -> dict[int, int]:
    """Each waiting job's place in line (1: next), from one look at the queue."""
    return {j.id: k for k, j in enumerate((j for j in jobs if j.status == "waiting"), 1)}


def job_panel(job: Job, place: int | None) -> None:
    """One job: how far it is (`place`: in line), its controls, and its run's loss curve."""
    st.markdown(f"**{common.md_escape(job.name)}**: {common.md_escape(describe(job))}")
    if job.status == "waiting":
        st.info(f"waiting: {ordinal(place or 1)} in line", icon=":material/hourglass_top:")
        if st.button("Cancel", key=f"train_cancel_{job.id}"):
            queue.stop(job.id)
            st.rerun(scope="app")
    elif job.status in ("running", "stopping"):
        if job.status == "stopping":
            st.caption("stopping: the step finishes, then a checkpoint is saved")
        elif job.max_steps:
            st.progress(min(1.0, job.step / job.max_steps), text=f"training: step {job.step:,} of {job.max_steps:,}"
                        + (f", loss {job.loss:.3f}" if job.loss is not None else ""))
        else:
            st.caption("starting: reading the data and building the model")
        if job.status == "running" and st.button("Stop", key=f"train_stop_{job.id}",
                                                 help="Stop at the end of this step, with a checkpoint (as Ctrl-C)"):
            queue.stop(job.id)
            st.rerun(scope="app")
    elif job.status == "stopped":
        st.warning(f"stopped at step {job.step:,} with a checkpoint: **Resume** continues it, as does "
                   f"`{command(job)}`", icon=":material/pause_circle:")
        if st.button("Resume", key=f"train_resume_{job.id}", type="primary"):
            put_in_line(lambda: queue.resume(job.runs_dir, job.name, callbacks=recorder(job.path)), "the resumption")
    elif job.status == "finished":
        st.success(f"finished: {job.card['steps']:,} steps; {result(job.card)}", icon=":material/check_circle:")
    elif job.status == "failed":
        st.error(f"failed: {job.error}")
    else:
        st.caption("cancelled before it started")
    curves = load_curves(job.path) if job.path.is_dir() else None
    if curves and (curves.train.x or curves.val.x):
        ui.chart(loss_figure({job.name: curves}, smoothing=0.3), f"train_curve_{job.id}")
    elif job.active:
        st.caption("The loss curve starts with the first logged training steps.")


def line_table(jobs: list[Job]) -> None:
    """Every job in line on this server, the running one first (the whole class's, in class mode)."""
    place = places(jobs)
    rows = [{"place": ordinal(place[j.id]) if j.id in place else "training", "run": j.name, "job": describe(j),
             "step": None if j.id in place else j.step} for j in jobs if j.active]
    if rows:
        st.subheader("In line on this server")
        ui.table(rows, "train_line")


def resume_section() -> None:
    """Stopped runs of the runs folder (by another session, the command line or a killed process; not
    those in line, nor this session's own stopped runs, which have their Resume button above)."""
    hidden = {j.path for j in queue.jobs() if j.active or (j.id in mine and j.status == "stopped")}
    stopped = [i for i in common.runs() if not i.error and run_status(i) in ("interrupted", STALE)
               and run_kind(i) in ("lm", "classifier") and i.path.resolve() not in hidden]
    if not stopped:
        return
    st.subheader("Resume a stopped run")
    c1, c2 = st.columns([3, 1])
    name = c1.selectbox("Stopped run", [i.path.name for i in stopped], key="train_resume_pick")
    if c2.button("Resume", key="train_resume_go") and name:
        put_in_line(lambda: queue.resume(root, name, callbacks=recorder(root / name)), f"the resumption of {name}")


mine = [i for i in st.session_state.get(JOBS, []) if i in {j.id for j in queue.jobs()}]
kind = st.radio("Kind", ["pretrain", "fine-tune"], horizontal=True, key="train_kind")
(pretrain_form if kind == "pretrain" else finetune_form)()


@st.fragment(run_every=common.REFRESH_S if any(j.active for j in queue.jobs()) else None)
def live() -> None:
    """This session's latest runs and the server's line, read again every REFRESH_S while any job is active."""
    jobs = {j.id: j for j in queue.jobs()}
    place = places(list(jobs.values()))
    latest = {}
    for job_id in reversed([i for i in mine if i in jobs]):  # a run's newest job (its resumption) stands for it
        latest.setdefault(jobs[job_id].path, jobs[job_id])
    if latest:
        st.subheader("Your runs")
    for job in list(latest.values())[:SHOWN]:
        with st.container(border=True):
            job_panel(job, place.get(job.id))
    line_table(list(jobs.values()))
    active = any(j.active for j in jobs.values())
    if st.session_state.get(LIVE) and not active:
        st.session_state[LIVE] = False
        st.rerun(scope="app")  # training ended: stop refreshing, list the runs it made
    st.session_state[LIVE] = active


live()
resume_section()
