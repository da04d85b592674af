"""faster-whisper, the peer bench/speech_throughput.py measures, in its own environment
(`infra/setup-envs.sh bench-speech`): reads one recording's path per line on stdin and answers
one JSON line, {"text": ...} or {"error": ...}. Greedy, English, no VAD: what vLLM does.

    .venvs/bench-speech/bin/python bench/faster_whisper_runner.py <ct2 folder> <compute type>
"""

import json
import sys

from faster_whisper import WhisperModel


def main() -> None:
    folder, compute_type = sys.argv[1], sys.argv[2]
    model = WhisperModel(folder, device="cpu", compute_type=compute_type, cpu_threads=2)
    for line in sys.stdin:
        try:
            segments, _ = model.transcribe(line.strip(), language="en", beam_size=1,
                                           temperature=0.0, vad_filter=False)
            answer = {"text": "".join(segment.text for segment in segments)}
        except Exception as exc:  # reported to the parent, which raises it with the file name
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
