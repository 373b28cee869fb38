"""Installs lib/logcrnn as the package ``logcrnn`` with the ``logcrnn`` console script.

The pinned stack is installed by ``make setup`` from requirements.txt (torch, petastorm and
horovod need special handling there); ``install_requires`` states the compatible ranges.
"""

from setuptools import find_packages, setup

setup(
    name="logcrnn",
    version="0.1.0",
    description="Nightly, distributed log anomaly detection on Spark and Delta Lake",
    package_dir={"": "lib"},
    packages=find_packages("lib"),
    # the Java functions' source, and their jar when `make setup` could build it
    package_data={"logcrnn": ["jvm/*.java", "jvm/*.jar"]},
    python_requires=">=3.11,<3.12",
    install_requires=[
        "pyspark>=3.5.3,<3.6",
        "pyarrow>=14,<15",
        "numpy>=1.26,<2",
        "pandas>=2.1,<2.2",
        "deltalake>=1.6,<2",
        "drain3==0.9.11",
        "PyYAML>=6",
    ],
    entry_points={"console_scripts": ["logcrnn=logcrnn.cli:main"]},
)
