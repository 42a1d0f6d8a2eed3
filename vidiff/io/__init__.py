"""Files and videos: atomic writes, the cache folder, finding files; reading and writing videos.

files.py   atomic_write, save_tensors / save_npz, writable, cache_dir, find_videos, the run lock
frames.py  frame geometry: the size that covers a target, centre crops, frames as the model's tensor
decode.py  decoding frames by presentation time with PyAV (the one video reader)
video.py   read a clip, write MP4 / GIF / a grid / a filmstrip
"""
