#!/bin/bash
# A sample bridge job: Slurm queues it, a Pod on the allocated node runs it.
#SBATCH --job-name=hello-gpu
#SBATCH --cpus-per-task=2
#SBATCH --mem=2G
#SBATCH --gres=gpu:a100:1
#SBATCH --time=00:05:00
#K8S_IMAGE=registry.lab:5000/skbridge-job:bookworm
#K8S_RESULTS=/workspace/outputs
echo "hello from job $SLURM_JOB_ID: uid $(id -u), groups $(id -G), in container $(hostname)"
echo "Slurm gave it GPU $SLURM_JOB_GPUS; the container sees NVIDIA_VISIBLE_DEVICES=$NVIDIA_VISIBLE_DEVICES"
mkdir -p outputs
python3 -c 'import platform; print("python", platform.python_version(), "on", platform.platform())' | tee outputs/python.txt
for step in 1 2 3; do echo "step $step of 3"; sleep 1; done
