import os
import signal
import time

import pytest

from retinaface.utils.signals import Terminated, interrupt_on_termination


def test_sigterm_raises_keyboard_interrupt_once_then_restores_the_handler():
    previous = signal.getsignal(signal.SIGTERM)
    with interrupt_on_termination() as state:
        with pytest.raises(KeyboardInterrupt) as caught:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this
        assert isinstance(caught.value, Terminated) and caught.value.signum == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGTERM)  # a second one during clean-up is ignored
        time.sleep(0.05)
    assert state.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is previous


def test_without_a_signal_the_exit_code_is_ctrl_c():
    with interrupt_on_termination() as state:
        pass
    assert state.exit_code == 130
