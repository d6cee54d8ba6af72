"""A small labelled set for intent matching: intents as a deployment would configure them (a few
example phrases each) and call utterances written as Whisper punctuates them, each labelled with
the intent it expresses or None. The utterances are not the examples: they paraphrase them, or
say something else a call center hears all day. Written for this project."""

INTENTS = {
    "cancel": [
        "I want to cancel my subscription",
        "please close my account",
        "I'd like to end my contract",
    ],
    "billing": [
        "I was charged twice",
        "there is a problem with my bill",
        "why is my invoice so high",
    ],
    "refund": [
        "I want a refund",
        "can I get my money back",
    ],
    "supervisor": [
        "let me talk to your supervisor",
        "I want to speak to a manager",
    ],
    "address_change": [
        "I moved and need to change my address",
        "please update my mailing address",
    ],
    "outage": [
        "my internet is not working",
        "the service keeps dropping",
    ],
}

UTTERANCES = [
    # cancel
    ("I'd like to cancel my plan today.", "cancel"),
    ("Can you close my account, please?", "cancel"),
    ("I want to cancel.", "cancel"),
    ("Please cancel my membership effective immediately.", "cancel"),
    ("I don't want this subscription anymore, cancel it.", "cancel"),
    ("How do I terminate my contract?", "cancel"),
    # billing
    ("My bill shows two charges this month.", "billing"),
    ("Why is my bill so expensive this time?", "billing"),
    ("I think there's a mistake on my invoice.", "billing"),
    ("You charged my card twice for the same order.", "billing"),
    # refund
    ("I'd like my money back.", "refund"),
    ("Can you refund the last payment?", "refund"),
    ("I need a refund for this order.", "refund"),
    # supervisor
    ("Get me your manager.", "supervisor"),
    ("Could you transfer me to a supervisor?", "supervisor"),
    ("I need to speak with someone in charge.", "supervisor"),
    # address change
    ("I just moved, can you update my address?", "address_change"),
    ("My mailing address has changed.", "address_change"),
    ("Please send the bills to my new address.", "address_change"),
    # outage
    ("My internet has been down since this morning.", "outage"),
    ("The connection keeps dropping every few minutes.", "outage"),
    ("Nothing works, the wifi is dead.", "outage"),
    # none of them
    ("Hello, thank you for calling. How can I help you today?", None),
    ("Thank you for calling, how can I help?", None),
    ("The weather is nice today.", None),
    ("My card number is [card].", None),
    ("Yes, that's right.", None),
    ("What is your date of birth?", None),
    ("Can I have your name, please?", None),
    ("I need to update my email address.", None),
    ("I want to buy a new phone.", None),
    ("I would like to upgrade my plan.", None),
    ("Let me check that for you.", None),
    ("Is there anything else I can help you with?", None),
    ("Have a great day, goodbye.", None),
    ("Could you spell your last name?", None),
    ("One moment please, I'm putting you on hold.", None),
    ("My order number is [number].", None),
    ("I'm calling about the new offer I saw online.", None),
    ("Sure, no problem.", None),
    ("What are your opening hours?", None),
    ("I love the new app, it's great.", None),
]
