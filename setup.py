"""s2f: Speech2Face on TensorFlow/Keras. Exact pins live in requirements.lock (see BUILD.md)."""

from setuptools import find_packages, setup

setup(
    name="s2f",
    version="0.1.0",
    description="Speech2Face: predict a speaker's face from speech (TensorFlow/Keras)",
    python_requires=">=3.11,<3.13",
    packages=find_packages(
        include=["s2f_tf", "s2f_tf.*", "pipelines", "pipelines.*", "serving", "serving.*"]
    ),
    package_data={"serving": ["web/*"]},  # the page `s2f serve` shows (serving/page.py)
    install_requires=[
        "tensorflow==2.21.*",
        "keras==3.15.*",
        "absl-py>=2.1",
        "numpy>=1.26",
        "h5py>=3.10",
        "pillow>=10",
        "scipy>=1.12",
        "soundfile>=0.12",
        "soxr>=0.4",
        "espeakng-loader>=0.2.4",
        "apache-beam>=2.60",
        "imageio-ffmpeg>=0.5",
        "mtcnn==1.0.*",
        "tensorflow-serving-api==2.21.*",
        "tensorboard==2.21.*",  # tf.summary needs it (TF 2.21 no longer depends on it)
        "grpcio>=1.60",
        "protobuf>=5,<7",
        "matplotlib>=3.8",  # report.html's plots
        "webrtcvad-wheels>=2.0.14",  # voice activity in whole recordings (s2f predict)
    ],
    extras_require={
        "test": ["pytest>=8", "librosa>=0.10", "selenium>=4.20"]
    },  # selenium: browser tests
    entry_points={"console_scripts": ["s2f=s2f_tf.app.cli:run"]},
)
