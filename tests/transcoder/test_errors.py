"""The error contract the RQ job relies on."""

import pickle

import pytest

from transcoder.errors import FfmpegFailed, InputRejected, TranscodeCancelled, TranscodeError


@pytest.mark.parametrize("cls, permanent", [(InputRejected, True), (FfmpegFailed, False),
                                            (TranscodeCancelled, False)])
def test_permanence_and_reason(cls, permanent):
    err = cls("The file is empty.", detail="ffmpeg said things")
    assert isinstance(err, TranscodeError)
    assert err.permanent is permanent
    assert err.reason == str(err) == "The file is empty."


def test_pickling_keeps_class_reason_and_detail():
    err = pickle.loads(pickle.dumps(InputRejected("Bad.", detail="moov atom not found")))
    assert type(err) is InputRejected
    assert (err.reason, err.detail) == ("Bad.", "moov atom not found")
