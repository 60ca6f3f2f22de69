"""Files in and out: audio, audio headers, feature files, embedding files, atomic writes and plots."""
