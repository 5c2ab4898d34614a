"""A fixed general probe: how much of the base model's everyday ability an adapter costs.

Written for edgetune: short, factual, topic-spread question-answer pairs no
user's stream is expected to contain. The rise of an adapter's answer loss on
them over the base model's is recorded in every manifest.
"""

GENERAL_PROBE: tuple[tuple[str, str], ...] = (
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many days are there in a leap year?", "A leap year has 366 days."),
    ("What gas do plants take in from the air to make food?", "Plants take in carbon dioxide and use sunlight to turn it into sugar."),
    ("Translate 'thank you' into Spanish.", "'Thank you' in Spanish is 'gracias'."),
    ("What is 12 multiplied by 8?", "12 multiplied by 8 is 96."),
    ("Who wrote the play Romeo and Juliet?", "Romeo and Juliet was written by William Shakespeare."),
    ("Why is the sky blue during the day?", "Air molecules scatter short blue wavelengths of sunlight more than red ones, so the sky looks blue."),
    ("Give one tip for sleeping better.", "Keep a regular schedule: go to bed and get up at the same time every day."),
    ("What is the boiling point of water at sea level in Celsius?", "Water boils at 100 degrees Celsius at sea level."),
    ("Name the largest planet in our solar system.", "Jupiter is the largest planet in our solar system."),
    ("What does a thermometer measure?", "A thermometer measures temperature."),
    ("Write a short greeting for a birthday card.", "Happy birthday! Wishing you a year full of joy, health and good friends."),
)
