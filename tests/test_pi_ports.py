"""Serial port listing (stable by-id names first) and the check on port names from HTTP."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from serial.tools import list_ports

from qsensor_pi import ports
from qsensor_pi.errors import InvalidArgument, NotFound


def test_listing_prefers_the_by_id_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = [p.device for p in list_ports.comports()]
    if not found:
        pytest.skip("this machine has no serial port to list")
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    (by_id / "usb-FTDI_FT232R_USB_UART_A1B2C3-if00-port0").symlink_to(found[0])
    monkeypatch.setattr(ports, "BY_ID_DIR", by_id)
    listed = {p.device: p for p in ports.list_serial_ports()}
    assert listed[found[0]].port == str(by_id / "usb-FTDI_FT232R_USB_UART_A1B2C3-if00-port0")
    assert all(p.port == p.device for d, p in listed.items() if d != found[0])


def test_only_serial_devices_pass(tmp_path: Path) -> None:
    leader, follower = os.openpty()
    try:
        pty_path = os.ttyname(follower)
        link = tmp_path / "ttyQ"
        link.symlink_to(pty_path)
        assert ports.check_port(pty_path) == pty_path
        assert ports.check_port(str(link)) == str(link)  # a link to a serial device is fine
    finally:
        os.close(leader)
        os.close(follower)
    (tmp_path / "null").symlink_to("/dev/null")
    (tmp_path / "file").write_text("x")
    for bad in ("/dev/null", str(tmp_path / "null"), str(tmp_path / "file"), "/etc/passwd"):
        with pytest.raises(InvalidArgument):
            ports.check_port(bad)
    for bad in ("ttyUSB0", "/dev/../dev/ttyS0", "/dev/tty S0", "/dev/ttyS0\x00"):
        with pytest.raises(InvalidArgument):
            ports.check_port(bad)
    with pytest.raises(NotFound):
        ports.check_port("/dev/ttyUSB4242")
