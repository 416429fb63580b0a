"""The demo PSTN gateway: a sipp UAS that answers every call and echoes its audio.

With no SIP provider configured (CBSERVER_TRUNK_URI unset), ``cbserver run`` points the
trunk at this peer so that a demo call-back really completes on one machine.
"""

from __future__ import annotations

from cbserver.config import Settings
from cbserver.sipp import SippPeer


class DemoGateway:
    def __init__(self, settings: Settings) -> None:
        self.peer = SippPeer(
            name="demo-gateway",
            port=settings.demo_gateway_port,
            workdir=settings.state_dir / "demo-gateway",
            builtin="uas",
            media_port=settings.demo_gateway_port + 1,
            rtp_echo=True,
            # Answers OPTIONS and INFO on its own, so qualify and DTMF never derail it.
            extra_args=("-aa",),
        )

    @property
    def uri(self) -> str:
        return f"sip:{self.peer.hostport}"

    def start(self) -> None:
        self.peer.start()

    def stop(self) -> None:
        self.peer.stop()
