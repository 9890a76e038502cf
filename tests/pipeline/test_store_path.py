"""The pipeline's per-instance path (routing, the patient's lock, the patient folder) keeps its
guarantees where it saves work: a blank input answers for every patient only when its choice
cannot depend on the patient, the lock is still taken when a validation holds it, and a
patient folder is made again when it went away behind the pipeline's back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import anyio
import pytest

import aiodicom
from aiodicom.pipeline import HistoricInput, Input, InputContainer
from aiodicom.pipeline.inputs import StoredInstance
from aiodicom.pipeline.storage import patient_folder_name

from .helpers import send_async, series, wait_until
from .test_pipeline import running, uids

pytestmark = pytest.mark.anyio


class Paths(aiodicom.Pipeline):
    """Notes the SOP Instance UIDs (file names) of each batch's "ct" input."""

    port = 0

    def __init__(self, **settings: object) -> None:
        super().__init__(**settings)
        self.batches: list[list[str]] = []

    async def process(self, container: InputContainer) -> None:
        self.batches.append(sorted(path.stem for path in container.paths["ct"]))


class Plain(Input):
    required_values = {"Modality": "CT"}


class SingleSeries(Plain):
    enforce_single_series = True


class FirstTwo(Plain):
    """A user's ``accepts`` that depends on what the input holds: two instances per patient."""

    def accepts(self, instance: StoredInstance) -> bool:
        return len(self) < 2 and super().accepts(instance)


class Priors(HistoricInput):
    archive = ("127.0.0.1", 1, "ARCHIVE")


@pytest.mark.parametrize(
    ("kind", "decides"),
    [
        (Plain, True), (SingleSeries, False), (FirstTwo, False), (Priors, False),
        (Plain | Plain, True), (Plain | SingleSeries, False), (FirstTwo | Plain, False),
    ],
)  # fmt: skip
def test_a_blank_input_decides_only_when_its_choice_cannot_depend_on_the_patient(
    kind: type[Input], decides: bool
) -> None:
    assert kind.blank_decides() is decides


async def test_an_input_whose_choice_depends_on_the_patient_is_asked_for_each(tmp_path: Path) -> None:
    """A user's stateful ``accepts``: the third instance of a patient is refused, the next
    patient's first two taken (a blank input would have said yes to all of them)."""

    class Node(Paths):
        inputs = {"ct": FirstTwo}

    pipeline = Node(data_directory=tmp_path / "data")
    first, second = series("FIRST", "CT", 3), series("SECOND", "CT", 2)
    async with running(pipeline) as port:
        sent = await send_async(port, [*first, *second])
        await wait_until(lambda: len(pipeline.batches) == 2, what="both patients processed")
    assert [code for code, _ in sent.statuses] == [0, 0, 0xC000, 0, 0]
    assert sorted(pipeline.batches) == sorted([uids(first[:2]), uids(second)])


class Gated(Input):
    """``validate()`` waits for the test: the patient's lock is held meanwhile."""

    required_values = {"Modality": "CT"}
    grind_in_worker = False
    gate: ClassVar[anyio.Event]
    entered: ClassVar[int] = 0

    async def validate(self) -> bool:
        type(self).entered += 1
        await type(self).gate.wait()
        return len(self) > 0


async def test_an_instance_arriving_while_its_patient_validates_waits_and_starts_the_next_batch(
    tmp_path: Path,
) -> None:
    """The lock's slow path: the late instance is kept only after the cut, in a new batch of its own."""

    class Node(Paths):
        inputs = {"ct": Gated}

    Gated.gate, Gated.entered = anyio.Event(), 0
    pipeline = Node(data_directory=tmp_path / "data")
    early, late = series("SAME", "CT", 2), series("SAME", "CT", 1)
    statuses: list[int] = []

    def waiting() -> bool:
        return any(patient.lock.statistics().tasks_waiting for patient in pipeline._patients.values())

    async def send_late() -> None:
        statuses.extend(code for code, _ in (await send_async(port, late)).statuses)

    async with running(pipeline) as port, anyio.create_task_group() as group:
        group.start_soon(lambda: send_async(port, early))  # its release validates, and waits at the gate
        await wait_until(lambda: Gated.entered == 1, what="the validation to hold the patient's lock")
        group.start_soon(send_late)
        await wait_until(waiting, what="the late instance to wait for the patient's lock")
        Gated.gate.set()
        await wait_until(lambda: len(pipeline.batches) == 2, what="both batches processed")
    assert statuses == [0]
    assert pipeline.batches == [uids(early), uids(late)]


async def test_a_patient_folder_removed_behind_the_pipelines_back_is_made_again(tmp_path: Path) -> None:
    """Folders are made once, not per instance; one gone meanwhile is made again, never 0xA700."""

    class Waiting(Plain):
        def validate(self) -> bool:
            return len(self) >= 4  # never here: the folder stays in incoming

    class Node(Paths):
        inputs = {"ct": Waiting}

    pipeline = Node(data_directory=tmp_path / "data")
    ct = series("MOVED", "CT", 3)
    incoming = tmp_path / "data" / "incoming"
    folder = incoming / patient_folder_name("MOVED")
    async with running(pipeline) as port:
        assert [code for code, _ in (await send_async(port, ct[:1])).statuses] == [0]
        os.rename(folder, tmp_path / "moved-away")  # an operator moves the patient's data away
        assert [code for code, _ in (await send_async(port, ct[1:])).statuses] == [0, 0]
        assert sorted(path.stem for path in folder.iterdir()) == uids(ct[1:])
