"""Audio really flows through Asterisk: the demo gateway sends back what Asterisk plays to it."""

from __future__ import annotations

import io
import math
import wave
from array import array
from collections.abc import Callable
from pathlib import Path

from cbserver.ari import AriClient, RecordingFinished, StasisStart
from cbserver.config import Settings
from cbserver.demo_gateway import DemoGateway
from cbserver.sipp import SippPeer
from tests.e2e.conftest import TEST_APP, Ports
from tests.e2e.harness import EventRecorder, until


def samples(wav_bytes: bytes) -> array[int]:
    with wave.open(io.BytesIO(wav_bytes)) as recording:
        assert recording.getsampwidth() == 2
        return array("h", recording.readframes(recording.getnframes()))


def loudness(audio: array[int]) -> float:
    """Root mean square of 16-bit samples: about 0 for silence, hundreds or more for speech."""
    return math.sqrt(sum(s * s for s in audio) / len(audio)) if audio else 0.0


async def record_what_the_trunk_sends_back(
    ari: AriClient, events: EventRecorder, name: str
) -> bytes:
    call = await ari.originate("PJSIP/+14155550123@trunk", app=TEST_APP)
    await events.wait_for(StasisStart, call.id)
    # Play and record on one channel would run one after the other (ARI queues them):
    # record a snoop channel that hears what the trunk sends in, while the call plays.
    ear = await ari.snoop(call.id, spy="in", app=TEST_APP)
    await events.wait_for(StasisStart, ear.id)
    await ari.play(call.id, "sound:demo-congrats")
    await ari.record(ear.id, name, max_duration_seconds=2, if_exists="overwrite")
    await until(
        lambda: [e for e in events.of_type(RecordingFinished) if e.recording.name == name],
        within=10,
        message=f"recording {name} to finish",
    )
    await ari.hangup(call.id)
    audio = await ari.stored_recording_file(name)
    assert await ari.delete_stored_recording(name)
    return audio


async def test_demo_gateway_echoes_the_audio_asterisk_plays_to_it(
    settings: Settings,
    ports: Ports,
    ari: AriClient,
    events: EventRecorder,
    sipp: Callable[..., SippPeer],
    tmp_path: Path,
) -> None:
    gateway = DemoGateway(settings.replace(demo_gateway_port=ports.trunk, state_dir=tmp_path))
    gateway.start()
    try:
        echoed = await record_what_the_trunk_sends_back(ari, events, "through-gateway")
    finally:
        gateway.stop()

    # The control: a peer that answers but sends no audio back records as silence.
    sipp("mute-trunk", ports.trunk, "uas_answer.xml")
    silence = await record_what_the_trunk_sends_back(ari, events, "through-mute-peer")

    # A peer that sends no RTP at all gives Asterisk nothing to record.
    assert loudness(samples(silence)) < 50
    echoed_audio = samples(echoed)
    assert len(echoed_audio) > 8000, "more than a second of audio came back at 8 kHz"
    assert loudness(echoed_audio) > 300
